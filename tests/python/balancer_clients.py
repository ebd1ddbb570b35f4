"""python-socketio through HAProxy (round-robin, no stickiness) in front of
three nodes, in every transport mode: connect, acks, a room broadcast between
two clients. Run by ``cargo test --test balancer``, which sets BALANCER_URL.
Not a pytest file (``tests/python``'s interop run must not collect it): a
plain script that exits non-zero on the first failed check.
"""

import os
import queue
import sys
import time

import socketio

URL = os.environ.get("BALANCER_URL")
if not URL:
    sys.exit("BALANCER_URL is not set: run through `cargo test --test balancer`")

MODES = {"websocket": ["websocket"], "polling": ["polling"], "upgrade": ["polling", "websocket"]}


def connect(transports):
    sio = socketio.Client(reconnection=False)
    welcome = queue.Queue()
    sio.on("welcome", lambda *args: welcome.put(args))
    sio.connect(URL, transports=transports, wait_timeout=5)
    welcome.get(timeout=5)
    return sio


for mode, transports in MODES.items():
    a = connect(transports)
    b = connect(transports)
    expected = "polling" if mode == "polling" else "websocket"
    deadline = time.time() + 5
    while a.transport() != expected and time.time() < deadline:
        time.sleep(0.05)
    assert a.transport() == expected, f"{mode}: transport {a.transport()}"
    for i in range(20):
        answer = a.call("echo", {"i": i, "mode": mode}, timeout=3)
        assert answer == {"i": i, "mode": mode}, answer
    news = queue.Queue()
    b.on("news", lambda data: news.put(data))
    room = f"py-{mode}-{os.getpid()}"
    b.call("join", room, timeout=3)
    a.call("to-room", {"room": room, "event": "news", "data": mode}, timeout=3)
    assert news.get(timeout=3) == mode
    a.disconnect()
    b.disconnect()
    print(f"ok {mode}", flush=True)
