"""An item's place in its queue is O(1) in its summary (``core/status.py``): the count of
items ahead and the one change directly ahead, read by the status CLI and the change's
page; summaries stored with the old list of every change ahead still read."""
from __future__ import annotations

import json

import requests

from ccci_gate.commands.status import format_status
from ccci_gate.core import events as ev
from ccci_gate.core.status import place_of

from gate_harness import Gate, change
from test_pages import BROWSER, World   # noqa: F401 - the world fixture's class
from test_status_cli import EXPECTED, canned


def gate_items(engine) -> list[dict]:
    return [i for p in engine.status()["pipelines"] if p["name"] == "gate"
            for q in p["queues"] for i in q["items"]]


def test_each_summary_carries_a_count_and_the_item_directly_ahead():
    g = Gate()
    g.send(ev.PauseRequest("gate", True))
    g.enqueue(*range(1, 61))
    items = gate_items(g.engine)
    assert [i["items_ahead"] for i in items] == list(range(60))
    assert [i["item_ahead"] for i in items] == [None] + [change(n).describe() for n in range(1, 60)]
    # the 60th item's whole summary is the 11th's size bar a digit in each number: the
    # status document grows with the queue, not its square
    sizes = [len(json.dumps(i)) for i in items]
    assert sizes[59] - sizes[10] <= 6, sizes
    # the record restores to the same summaries
    g.send(ev.PauseRequest("gate", False))
    assert [place_of(i) for i in gate_items(g.engine)][:3] == [
        (0, None), (1, "org/a#1,sha1"), (2, "org/a#2,sha2")]


def test_a_summary_stored_with_the_list_of_every_change_ahead_still_reads():
    assert place_of({"items_ahead": ["org/a#1", "org/a#2"]}) == (2, "org/a#2")
    assert place_of({"items_ahead": []}) == (0, None)
    assert place_of({}) == (0, None)
    assert place_of({"items_ahead": 3, "item_ahead": "org/a#3"}) == (3, "org/a#3")
    old = canned()
    for item in (i for p in old["pipelines"] for q in p["queues"] for i in q["items"]):
        count, direct = item.pop("items_ahead"), item.pop("item_ahead")
        item["items_ahead"] = ["org/x#1"] * (count - 1) + [direct] if count else []
    assert format_status(old) == EXPECTED
    longer = canned()
    third = longer["pipelines"][1]["queues"][0]["items"][1]
    third["items_ahead"] = 4
    assert "(on org/recipe#8, 4 ahead)" in format_status(longer)


def test_the_changes_page_says_what_it_is_behind_old_summaries_too(tmp_path):
    world = World(tmp_path)
    try:
        world.step(ev.PauseRequest("gate", True))
        for n in (1, 2, 3):
            world.step(ev.EnqueueRequest("gate", change(n)))
        third = gate_items(world.gate.engine)[2]
        url = f"{world.url}/items/{third['item_id']}"
        live = requests.get(url, timeout=10).json()
        assert (live["items_ahead"], live["item_ahead"]) == (2, "org/a#2,sha2")
        html = requests.get(url, headers={"Accept": BROWSER}, timeout=10).text
        assert '<td id="ahead">org/a#2,sha2 (2 ahead)</td>' in html
        # an item stored before the count: its list of every change ahead
        old = {**live, "item_id": "e" * 32, "items_ahead": ["org/a#1,sha1", "org/a#2,sha2"]}
        old.pop("item_ahead")
        old["buildset"] = {**old["buildset"], "id": None}
        world.store.save_items([old], finished=True)
        html = requests.get(f"{world.url}/items/{'e' * 32}", headers={"Accept": BROWSER},
                            timeout=10).text
        assert '<td id="ahead">org/a#2,sha2 (2 ahead)</td>' in html
    finally:
        world.close()
