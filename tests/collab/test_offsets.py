"""Index conversions at the pycrdt / JavaScript / Python boundaries."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from collab import Client, CollabServer
from collab.live.offsets import codepoint_to_utf16, utf8_offset, utf16_to_codepoint


@given(st.text(), st.data())
def test_conversions_agree_with_encodings(text: str, data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(text)))
    assert utf8_offset(text, index) == len(text[:index].encode("utf-8"))
    units = codepoint_to_utf16(text, index)
    assert units == len(text[:index].encode("utf-16-le")) // 2
    assert utf16_to_codepoint(text, units) == index


async def test_client_inserts_and_deletes_by_code_point(server: CollabServer) -> None:
    async with Client(server.url, user="a") as a, Client(server.url, user="b") as b:
        da = await a.open("demo/main:docs/unicode.txt")
        db = await b.open("demo/main:docs/unicode.txt")
        da.insert(1, "[1]")  # right after 'h', before 'é'
        da.insert(2 + 3, "[2]")  # after 'é'
        emoji = str(da).index("🎉")
        da.insert(emoji + 1, "[3]")  # after the emoji
        da.delete(0, 1)
        expected = str(da)
        assert expected.startswith("[1]é[2]llo")
        assert "🎉[3] emoji" in expected
        await db.wait_for(lambda t: t == expected)
