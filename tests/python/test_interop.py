"""Interop tests of rain-node against python-socketio's sync client.

The server under test is the ``testbed`` example; its URL comes from RAIN_URL
(set by ``cargo test --test interop``, or by hand:
``RAIN_URL=http://127.0.0.1:PORT python3 -m pytest -q tests/python``).
"""

import os
import queue
import time
import uuid

import pytest
import socketio

URL = os.environ.get("RAIN_URL")
if not URL:
    raise RuntimeError(
        "RAIN_URL is not set: run these through `cargo test --test interop` "
        "or set RAIN_URL=http://127.0.0.1:PORT of a running testbed"
    )

#: transport modes: websocket only, polling only, polling upgraded to websocket
MODES = {
    "websocket": ["websocket"],
    "polling": ["polling"],
    "upgrade": None,
}
EXPECTED_TRANSPORT = {"websocket": "websocket", "polling": "polling", "upgrade": "websocket"}
TIMEOUT = 3


def unique(prefix):
    return f"{prefix}{uuid.uuid4().hex[:12]}"


class Events:
    """Records the arguments of every occurrence of some events of a client."""

    def __init__(self, sio, namespace="/"):
        self.sio = sio
        self.namespace = namespace
        self.queues = {}

    def watch(self, event):
        q = self.queues.setdefault(event, queue.Queue())

        def handler(*args):
            q.put(args)

        self.sio.on(event, handler, namespace=self.namespace)
        return self

    def next(self, event, timeout=TIMEOUT):
        """The argument tuple of the next occurrence of ``event``."""
        try:
            return self.queues[event].get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f'no "{event}" within {timeout} s') from None

    def none(self, event, timeout=0.3):
        """Asserts that ``event`` does not occur within ``timeout``."""
        try:
            args = self.queues[event].get(timeout=timeout)
        except queue.Empty:
            return
        raise AssertionError(f'unexpected "{event}": {args!r}')


@pytest.fixture
def clients():
    """Makes clients (socketio.Client + Events); disconnects them all at the end."""
    made = []

    def make(mode, namespaces=("/",), auth=None, connect=True, reconnection=False, watch=()):
        sio = socketio.Client(
            reconnection=reconnection,
            reconnection_delay=0.1,
            reconnection_delay_max=0.5,
            randomization_factor=0,
            handle_sigint=False,
            request_timeout=5,
        )
        made.append(sio)
        events = {ns: Events(sio, ns).watch("welcome") for ns in namespaces}
        for ns in namespaces:
            for event in watch:
                events[ns].watch(event)
        if connect:
            sio.connect(
                URL,
                auth=auth,
                transports=MODES[mode],
                namespaces=list(namespaces),
                wait_timeout=5,
            )
        return sio, events

    yield make
    for sio in made:
        sio.reconnection = False
        try:
            sio.disconnect()
        except Exception:  # noqa: BLE001 - best-effort cleanup
            pass
        try:
            sio.shutdown()
        except Exception:  # noqa: BLE001
            pass


def first_welcome(events, ns="/"):
    (payload,) = events[ns].next("welcome")
    return payload


@pytest.mark.parametrize("mode", MODES)
def test_connect_with_auth(clients, mode):
    auth = {"token": "py-token", "user": "ada"}
    sio, events = clients(mode, auth=auth)
    welcome = first_welcome(events)
    sid = sio.get_sid("/")
    assert sid
    assert welcome == {"sid": sid, "namespace": "/", "auth": auth}
    assert sio.transport() == EXPECTED_TRANSPORT[mode]


@pytest.mark.parametrize("mode", MODES)
def test_rejected_connect(clients, mode):
    sio, _ = clients(mode, connect=False)
    errors = queue.Queue()
    sio.on("connect_error", lambda *data: errors.put(data))
    with pytest.raises(socketio.exceptions.ConnectionError):
        sio.connect(URL, auth={"token": "reject"}, transports=MODES[mode], wait_timeout=5)
    (data,) = errors.get(timeout=TIMEOUT)
    assert data == {"message": "rejected"}
    assert not sio.connected


@pytest.mark.parametrize("mode", MODES)
def test_echo_with_ack(clients, mode):
    sio, _ = clients(mode)
    value = {"text": "héllo ✓", "n": [1, 2.5, None, True], "nested": {"k": "v"}}
    assert sio.call("echo", value, timeout=TIMEOUT) == value
    # several arguments come back as several ack arguments
    assert tuple(sio.call("echo", ("a", 1, [2]), timeout=TIMEOUT)) == ("a", 1, [2])


@pytest.mark.parametrize("mode", MODES)
def test_echo_without_ack(clients, mode):
    sio, events = clients(mode, watch=["echo"])
    sio.emit("echo", ("hi", {"n": 2}))
    assert events["/"].next("echo") == ("hi", {"n": 2})


@pytest.mark.parametrize("mode", MODES)
def test_server_to_client_ack(clients, mode):
    sio, _ = clients(mode)
    asked = []

    def on_question(question):
        asked.append(question)
        return {"py": question.upper()}

    sio.on("question", on_question)
    reply = sio.call("ask", {"question": "why"}, timeout=TIMEOUT)
    assert reply == {"answer": {"py": "WHY"}}
    assert asked == ["why"]


@pytest.mark.parametrize("mode", MODES)
def test_binary_round_trip(clients, mode):
    sio, events = clients(mode, watch=["echo"])
    blob = bytes(range(256)) * 4
    got = sio.call("echo", blob, timeout=TIMEOUT)
    assert isinstance(got, bytes)
    assert got == blob
    nested = {"name": "file", "parts": [b"\x00\x01", {"inner": b"\xff" * 10}]}
    assert sio.call("echo", nested, timeout=TIMEOUT) == nested
    # without an ack: the server emits echo back, still binary
    sio.emit("echo", (b"raw\x00bytes", "label"))
    assert events["/"].next("echo") == (b"raw\x00bytes", "label")


@pytest.mark.parametrize("mode", MODES)
def test_rooms_between_two_clients(clients, mode):
    room = unique("room")
    event = unique("ev")
    a, ea = clients(mode, watch=[event])
    b, eb = clients(mode, watch=[event])
    assert a.call("join", room, timeout=TIMEOUT) == [room]
    assert sorted(a.call("rooms", timeout=TIMEOUT)) == [room]
    # b (not a member) sends to the room: a gets it, b does not
    assert b.call("to-room", {"room": room, "event": event, "data": {"x": 1}}, timeout=TIMEOUT) is True
    assert ea["/"].next(event) == ({"x": 1},)
    eb["/"].none(event)
    # a leaves: nobody gets the next one
    assert a.call("leave", room, timeout=TIMEOUT) == []
    assert b.call("to-room", {"room": room, "event": event, "data": 2}, timeout=TIMEOUT) is True
    ea["/"].none(event)


@pytest.mark.parametrize("mode", MODES)
def test_broadcast(clients, mode):
    event = unique("bc")
    a, ea = clients(mode, watch=[event])
    b, eb = clients(mode, watch=[event])
    assert a.call("broadcast", {"event": event, "data": "from a"}, timeout=TIMEOUT) is True
    assert eb["/"].next(event) == ("from a",)
    ea["/"].none(event)


@pytest.mark.parametrize("mode", MODES)
def test_two_namespaces_one_connection(clients, mode):
    sio, events = clients(mode, namespaces=("/", "/custom"), auth={"who": "py"})
    main_sid = sio.get_sid("/")
    custom_sid = sio.get_sid("/custom")
    assert main_sid and custom_sid and main_sid != custom_sid
    assert first_welcome(events, "/") == {"sid": main_sid, "namespace": "/", "auth": {"who": "py"}}
    assert first_welcome(events, "/custom") == {
        "sid": custom_sid,
        "namespace": "/custom",
        "auth": {"who": "py"},
    }
    engine_sid = sio.eio.sid
    assert engine_sid
    assert sio.call("echo", "main", namespace="/", timeout=TIMEOUT) == "main"
    assert sio.call("echo", "custom", namespace="/custom", timeout=TIMEOUT) == "custom"
    assert sio.eio.sid == engine_sid
    # rooms are per namespace
    room = unique("room")
    assert sio.call("join", room, namespace="/custom", timeout=TIMEOUT) == [room]
    assert sio.call("rooms", namespace="/", timeout=TIMEOUT) == []


@pytest.mark.parametrize("mode", MODES)
def test_dynamic_namespace(clients, mode):
    ns = "/dyn-" + unique("py")
    sio, events = clients(mode, namespaces=(ns,))
    welcome = first_welcome(events, ns)
    assert welcome["namespace"] == ns
    assert welcome["sid"] == sio.get_sid(ns)
    assert sio.call("echo", [1, 2], namespace=ns, timeout=TIMEOUT) == [1, 2]


@pytest.mark.parametrize("mode", MODES)
def test_client_disconnect(clients, mode):
    event = unique("bc")
    a, ea = clients(mode, watch=[event])
    b, _ = clients(mode)
    c, ec = clients(mode, watch=[event])
    reasons = queue.Queue()
    a.on("disconnect", lambda *r: reasons.put(r))
    a.disconnect()
    assert reasons.get(timeout=TIMEOUT) == (a.reason.CLIENT_DISCONNECT,)
    assert not a.connected
    assert b.call("broadcast", {"event": event, "data": 1}, timeout=TIMEOUT) is True
    assert ec["/"].next(event) == (1,)
    ea["/"].none(event)


@pytest.mark.parametrize("mode", MODES)
def test_server_disconnect(clients, mode):
    sio, events = clients(mode, reconnection=True)
    first_welcome(events)
    reasons = queue.Queue()
    sio.on("disconnect", lambda *r: reasons.put(r))
    sio.emit("disconnect-me")
    # python-socketio reports a Socket.IO DISCONNECT packet as SERVER_DISCONNECT
    assert reasons.get(timeout=TIMEOUT) == (sio.reason.SERVER_DISCONNECT,)
    time.sleep(1.5)
    assert not sio.connected, "the client reconnected after a server disconnect"
    events["/"].none("welcome", timeout=0.1)


@pytest.mark.parametrize("mode", MODES)
def test_reconnect_after_drop_transport(clients, mode):
    sio, events = clients(mode, reconnection=True, auth={"token": "again"})
    first = first_welcome(events)
    first_sid = sio.get_sid("/")
    first_engine = sio.eio.sid
    assert first["sid"] == first_sid
    reasons = queue.Queue()
    sio.on("disconnect", lambda *r: reasons.put(r))
    started = time.monotonic()
    sio.emit("drop-transport")
    (reason,) = reasons.get(timeout=TIMEOUT)
    # python-engineio reports any dropped transport as TRANSPORT_ERROR; an
    # orderly Engine.IO close would be SERVER_DISCONNECT (and no reconnection)
    assert reason == sio.reason.TRANSPORT_ERROR, reason
    (again,) = events["/"].next("welcome", timeout=5)
    elapsed = time.monotonic() - started
    assert elapsed < 5, f"reconnection took {elapsed:.1f} s"
    # the welcome may come before the client has recorded the namespace as connected
    deadline = time.monotonic() + TIMEOUT
    while not sio.connected and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sio.connected
    assert again["auth"] == {"token": "again"}
    assert again["sid"] == sio.get_sid("/")
    assert again["sid"] != first_sid
    assert sio.eio.sid != first_engine
    assert sio.transport() == EXPECTED_TRANSPORT[mode]
    assert sio.call("echo", "after reconnect", timeout=TIMEOUT) == "after reconnect"

