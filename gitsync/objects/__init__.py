"""Objects on the store: commits with their trees and refs, history, and the checks of fsck."""
