"""The embedded ``filesystem://`` broker (``app.fs_broker``) keeps a queue's order."""

from __future__ import annotations

from pathlib import Path

from kombu import Connection

from app import fs_broker


def test_messages_sent_within_one_millisecond_come_out_in_the_order_sent(
    tmp_path: Path,
) -> None:
    fs_broker.register()
    folder = tmp_path / "data"
    folder.mkdir()
    options = {
        "data_folder_in": str(folder),
        "data_folder_out": str(folder),
        "control_folder": str(tmp_path / "control"),
    }
    # Given 300 messages sent back to back (many fall in the same millisecond)
    with Connection(f"{fs_broker.ALIAS}://localhost//", transport_options=options) as conn:
        queue = conn.SimpleQueue("usher.action.fs.order")
        for n in range(300):
            queue.put({"n": n})
        # When a consumer reads them all
        got = []
        for _ in range(300):
            message = queue.get(timeout=5)
            got.append(message.payload["n"])
            message.ack()
        queue.close()
    # Then they come out in the order they were sent
    assert got == list(range(300))


def test_a_message_name_sorts_by_the_time_it_was_sent() -> None:
    names = [fs_broker.message_name("q") for _ in range(1000)]
    assert names == sorted(names)
    assert len(set(names)) == len(names)
    assert all(name.partition(".")[2] == "q.msg" for name in names)
