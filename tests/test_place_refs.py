"""index.json placement: place_refs (the batch an import uses) is place_ref applied in turn."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from layouttool import mediatypes as mt
from layouttool.digest import Digest
from layouttool.model import Descriptor
from layouttool.ops.layout import place_ref, place_refs

DIGESTS = [Digest.of_bytes(bytes([i])) for i in range(4)]


def descriptor(i: int, ref: str | None, size: int) -> Descriptor:
    ann = {} if ref is None else {mt.ANNOT_REF_NAME: ref}
    return Descriptor(mt.MT_OCI_MANIFEST, DIGESTS[i], size, annotations=ann)


entries_st = st.lists(
    st.builds(descriptor, st.integers(0, 3), st.sampled_from([None, "a", "b", "c"]),
              st.sampled_from([10, 11])),
    max_size=8,
)


def one_by_one(entries: list[Descriptor], news: list[Descriptor]
               ) -> tuple[list[Descriptor], list[str]]:
    """The rule written the slow way: each new entry against the whole list."""
    actions = []
    for new in news:
        if new.annotations.get(mt.ANNOT_REF_NAME) is None:
            if any(e.digest == new.digest for e in entries):
                actions.append("unchanged")
            else:
                entries = [*entries, new]
                actions.append("added")
        elif new in entries:
            actions.append("unchanged")
        else:
            entries, action = place_ref(entries, new)
            actions.append(action)
    return entries, actions


@settings(max_examples=400, deadline=None)
@given(entries_st, entries_st)
def test_place_refs_is_place_ref_in_turn(entries: list[Descriptor],
                                         news: list[Descriptor]) -> None:
    assert place_refs(entries, news) == one_by_one(entries, news)


def test_a_tag_moves_and_an_untagged_twin_goes() -> None:
    old = [descriptor(0, "a", 10), descriptor(1, None, 10), descriptor(2, "b", 10)]
    out, actions = place_refs(old, [descriptor(1, "a", 10), descriptor(2, "b", 10),
                                    descriptor(3, None, 10), descriptor(3, None, 10)])
    assert actions == ["moved", "unchanged", "added", "unchanged"]
    assert out == [descriptor(1, "a", 10), descriptor(2, "b", 10), descriptor(3, None, 10)]
