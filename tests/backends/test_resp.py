"""keylimit's own RESP2 client (``keylimit.redis._client``): the parser on every reply type however
the replies are cut into reads, and the client against real redis-servers (AUTH, SELECT,
TLS, a lost connection, a server that stops answering, many callers on one connection)."""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis

from keylimit.redis._client import (
    ConnectFailed,
    ConnectionLost,
    ProtocolViolation,
    Reply,
    ReplyError,
    ReplyTimeout,
    RespClient,
    RespProtocol,
    Target,
    pack,
)
from tests._redis import RedisServer, free_port

# Every RESP2 reply type, each with what the client makes of it.
REPLIES: list[tuple[bytes, Reply]] = [
    # simple strings and integers
    (b"+OK\r\n", b"OK"),
    (b"+\r\n", b""),
    (b":42\r\n", 42),
    (b":-7\r\n", -7),
    # bulk strings: binary, empty, holding CRLF, null
    (b"$5\r\nhello\r\n", b"hello"),
    (b"$0\r\n\r\n", b""),
    (b"$6\r\na\r\n\x00b\xff\r\n", b"a\r\n\x00b\xff"),
    (b"$-1\r\n", None),
    # arrays: empty, null, of mixed items, nested, with a null array inside
    (b"*0\r\n", []),
    (b"*-1\r\n", None),
    (b"*3\r\n:1\r\n$-1\r\n+x\r\n", [1, None, b"x"]),
    (b"*2\r\n*2\r\n:1\r\n$2\r\nab\r\n*1\r\n*-1\r\n", [[1, b"ab"], [None]]),
]
STREAM = b"".join(raw for raw, _ in REPLIES)


@pytest.fixture
async def protocol() -> AsyncIterator[RespProtocol]:
    """A protocol object on a real transport (one end of a socket pair): what it writes goes
    nowhere that answers, and the test feeds it replies through ``data_received``."""
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    _, proto = await loop.create_connection(lambda: RespProtocol(loop, 60.0), sock=ours)
    yield proto
    proto.connection_lost(None)
    theirs.close()


def expected_values() -> list[Reply]:
    return [value for _, value in REPLIES]


async def test_every_reply_type_in_one_read(protocol: RespProtocol) -> None:
    futures = [protocol.send(pack("PING")) for _ in REPLIES]
    protocol.data_received(STREAM)
    assert [await f for f in futures] == expected_values()


@pytest.mark.parametrize("cut", range(1, len(STREAM)))
async def test_replies_cut_anywhere_into_two_reads(protocol: RespProtocol, cut: int) -> None:
    futures = [protocol.send(pack("PING")) for _ in REPLIES]
    protocol.data_received(STREAM[:cut])
    protocol.data_received(STREAM[cut:])
    assert [await f for f in futures] == expected_values()


async def test_replies_one_byte_per_read(protocol: RespProtocol) -> None:
    futures = [protocol.send(pack("PING")) for _ in REPLIES]
    for n in range(len(STREAM)):
        protocol.data_received(STREAM[n : n + 1])
    assert [await f for f in futures] == expected_values()


async def test_a_batch_resolves_once_with_all_its_replies(protocol: RespProtocol) -> None:
    single = protocol.send(pack("PING"))
    batch = protocol.send(pack("PING") * 3, 3)
    last = protocol.send(pack("PING"))
    protocol.data_received(b"+a\r\n:1\r\n-NOSCRIPT No matching script\r\n")
    assert single.done()
    assert not batch.done()
    protocol.data_received(b":3\r\n+z\r\n")
    assert await single == b"a"
    one, error, three = await batch
    assert (one, three) == (1, 3)
    assert isinstance(error, ReplyError)
    assert error.reason == "NOSCRIPT"
    assert await last == b"z"


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"-NOSCRIPT No matching script. Please use EVAL.\r\n", "NOSCRIPT"),
        (b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n", "WRONGTYPE"),
        (b"-ERR user_script:1: secret-identity bad argument\r\n", "ERR"),
        # no code: a script's own error text is never repeated
        (b"-secret-identity is over its limit\r\n", "ERR"),
        (b"-\r\n", "ERR"),
    ],
)
async def test_an_error_reply_carries_its_code_only(protocol: RespProtocol, line: bytes, reason: str) -> None:
    future = protocol.send(pack("PING"))
    protocol.data_received(line)
    error = await future
    assert isinstance(error, ReplyError)
    assert error.reason == reason
    assert str(error) == reason
    assert "secret" not in repr(error)


@pytest.mark.parametrize(
    "data",
    [
        b"!3\r\nabc\r\n",  # not a RESP2 type
        b":12x\r\n",  # not an integer
        b"$3\r\nabcd\r\n",  # a bulk string longer than it said
    ],
)
async def test_anything_but_resp2_fails_every_pending_call_and_drops_the_connection(
    protocol: RespProtocol, data: bytes
) -> None:
    first, second = protocol.send(pack("PING")), protocol.send(pack("PING"))
    protocol.data_received(data)
    for future in (first, second):
        with pytest.raises(ProtocolViolation):
            await future
    assert protocol.dead


async def test_a_reply_nobody_asked_for_drops_the_connection(protocol: RespProtocol) -> None:
    first = protocol.send(pack("PING"))
    protocol.data_received(b"+OK\r\n+unasked\r\n")
    assert await first == b"OK"
    assert protocol.dead


async def test_a_cancelled_caller_still_gets_its_reply_consumed(protocol: RespProtocol) -> None:
    gone, waiting = protocol.send(pack("PING")), protocol.send(pack("PING"))
    gone.cancel()
    protocol.data_received(b":1\r\n:2\r\n")
    assert await waiting == 2
    assert not protocol.dead


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:7000/0", Target("127.0.0.1", 7000, False, 0)),
        ("redis://h", Target("h", 6379, False, 0)),
        ("redis://h/", Target("h", 6379, False, 0)),
        ("REDISS://h:1/3", Target("h", 1, True, 3, (pack("SELECT", 3),))),
        ("redis://:p%40ss@h/0", Target("h", 6379, False, 0, (pack("AUTH", "p@ss"),))),
        ("redis://al:pw@h/2", Target("h", 6379, False, 2, (pack("AUTH", "al", "pw"), pack("SELECT", 2)))),
        # what only redis-py understands, or not a standalone server: None
        ("rediss://h/0?ssl_cert_reqs=none", None),
        ("redis://h/0?db=1", None),
        ("redis://h/zero", None),
        ("redis://h:notaport/0", None),
        ("redis+cluster://h:7000", None),
        ("unix:///tmp/redis.sock", None),
    ],
)
def test_targets_from_urls(url: str, expected: Target | None) -> None:
    assert Target.from_url(url) == expected


def test_the_password_stays_out_of_the_repr() -> None:
    target = Target.from_url("redis://user:s3cret-pw@127.0.0.1:7000/1")
    assert target is not None
    client = RespClient(target)
    assert "s3cret-pw" not in repr(target) + repr(client)
    assert "127.0.0.1" in repr(client)


# Against real servers.


@pytest.fixture
def server() -> Iterator[RedisServer]:
    """A private redis-server, that a test may stop, pause or protect with a password."""
    server = RedisServer().start()
    yield server
    if server.proc is not None:
        server.proc.send_signal(signal.SIGCONT)
    server.stop()


def client_for(server: RedisServer, *, url: str | None = None, timeout: float = 5.0) -> RespClient:
    target = Target.from_url(url or server.url)
    assert target is not None
    return RespClient(target, timeout=timeout)


def connections_received(server: RedisServer, password: str | None = None) -> int:
    return int(redis.Redis(port=server.port, password=password).info("stats")["total_connections_received"])


async def test_commands_and_their_errors(server: RedisServer) -> None:
    client = client_for(server)
    assert await client.execute(pack("PING")) == b"PONG"
    assert await client.execute(pack("SET", "kl:s3cret-key", "v")) == b"OK"
    assert await client.execute(pack("HMGET", "h", "a", "b")) == [None, None]
    with pytest.raises(ReplyError) as caught:
        await client.execute(pack("HGET", "kl:s3cret-key", "f"))
    assert caught.value.reason == "WRONGTYPE"
    assert "s3cret" not in str(caught.value) + repr(caught.value)
    replies = await client.execute_many([pack("INCR", "n"), pack("INCR", "kl:s3cret-key"), pack("INCR", "n")])
    assert replies[0::2] == [1, 2]
    assert isinstance(replies[1], ReplyError)
    assert await client.execute_many([]) == []
    assert await client.execute(pack("GET", "n")) == b"2"  # the connection is still in step
    await client.aclose()


async def test_many_callers_share_one_connection_opened_once(server: RedisServer) -> None:
    client = client_for(server)
    before = connections_received(server)
    replies = await asyncio.gather(*(client.execute(pack("INCR", "n")) for _ in range(1000)))
    assert set(replies) == set(range(1, 1001))
    assert connections_received(server) - before == 1 + 1  # ours, and the one asking
    await client.aclose()


async def test_auth_with_a_password_and_with_a_user(server: RedisServer) -> None:
    admin = server.client()
    admin.acl_setuser("alice", enabled=True, passwords=["+alice-pw"], keys=["*"], commands=["+@all"])
    admin.config_set("requirepass", "s3cret-pw")
    port = server.port

    for url in (f"redis://:s3cret-pw@127.0.0.1:{port}/0", f"redis://alice:alice-pw@127.0.0.1:{port}/0"):
        client = client_for(server, url=url)
        assert await client.execute(pack("PING")) == b"PONG"
        await client.aclose()

    for url, reason in (
        (f"redis://127.0.0.1:{port}/0", "NOAUTH"),  # no password: refused at the first command
        (f"redis://:wrong-pw@127.0.0.1:{port}/0", "WRONGPASS"),
        (f"redis://alice:s3cret-pw@127.0.0.1:{port}/0", "WRONGPASS"),
    ):
        client = client_for(server, url=url)
        with pytest.raises((ConnectFailed, ReplyError)) as caught:
            await client.execute(pack("PING"))
        assert caught.value.reason == reason
        assert "pw" not in str(caught.value)
        await client.aclose()


async def test_select_from_the_path(server: RedisServer) -> None:
    client = client_for(server, url=server.url.removesuffix("/0") + "/5")
    await client.execute(pack("SET", "where", "five"))
    assert redis.Redis(port=server.port, db=5).get("where") == b"five"
    assert redis.Redis(port=server.port, db=0).get("where") is None
    await client.aclose()


async def test_a_lost_connection_fails_what_is_pending_and_the_next_call_reconnects(server: RedisServer) -> None:
    client = client_for(server, timeout=60.0)  # only the loss can end the pending calls
    await client.execute(pack("PING"))
    assert server.proc is not None
    server.proc.send_signal(signal.SIGSTOP)  # the calls below stay unanswered ...
    pending = [asyncio.ensure_future(client.execute(pack("INCR", "n"))) for _ in range(20)]
    await asyncio.sleep(0)  # ... once written
    server.proc.kill()  # ... until the server dies
    server.proc.wait()
    server.proc = None
    for call in pending:
        with pytest.raises(ConnectionLost):
            await call
    with pytest.raises(ConnectFailed):  # nothing listens: each call tries to connect, and fails
        await client.execute(pack("PING"))

    server.start()
    assert await client.execute(pack("INCR", "n")) == 1  # a new connection, a new server
    await client.aclose()


async def test_a_server_that_stops_answering_times_out_every_pending_call(server: RedisServer) -> None:
    client = client_for(server, timeout=0.5)
    await client.execute(pack("PING"))
    assert server.proc is not None
    server.proc.send_signal(signal.SIGSTOP)
    calls = await asyncio.gather(*(client.execute(pack("INCR", "n")) for _ in range(5)), return_exceptions=True)
    assert [type(c) for c in calls] == [ReplyTimeout] * 5
    server.proc.send_signal(signal.SIGCONT)
    # The old connection is gone (its commands may still run); a new one answers.
    assert await client.execute(pack("PING")) == b"PONG"
    await client.aclose()


async def test_a_handshake_that_gets_no_answer_times_out(server: RedisServer) -> None:
    server.client().config_set("requirepass", "s3cret-pw")
    assert server.proc is not None
    server.proc.send_signal(signal.SIGSTOP)  # it accepts connections (the kernel does) but answers nothing
    client = client_for(server, url=f"redis://:s3cret-pw@127.0.0.1:{server.port}/0", timeout=0.5)
    with pytest.raises(ConnectFailed):
        await client.execute(pack("PING"))
    await client.aclose()


async def test_callers_share_one_failed_connect_attempt() -> None:
    target = Target.from_url(f"redis://127.0.0.1:{free_port()}/0")
    assert target is not None
    client = RespClient(target)
    calls = await asyncio.gather(*(client.execute(pack("PING")) for _ in range(50)), return_exceptions=True)
    assert {type(c) for c in calls} == {ConnectFailed}
    assert {c.reason for c in calls if isinstance(c, ConnectFailed)} == {"ConnectionRefusedError"}
    await client.aclose()


async def test_aclose_leaves_no_task_and_no_timer(server: RedisServer) -> None:
    loop = asyncio.get_running_loop()
    client = client_for(server)
    await asyncio.gather(*(client.execute(pack("PING")) for _ in range(10)))
    await client.aclose()
    assert asyncio.all_tasks() == {asyncio.current_task()}
    assert [h for h in loop._scheduled if not h.cancelled()] == []  # type: ignore[attr-defined]

    # Closed while connecting: the attempt is cancelled and nothing is left either.
    server.proc.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]
    slow = client_for(server, url=f"redis://:pw@127.0.0.1:{server.port}/0")
    call = asyncio.ensure_future(slow.execute(pack("PING")))
    await asyncio.sleep(0)
    await slow.aclose()
    with pytest.raises(ConnectFailed):
        await call
    assert asyncio.all_tasks() == {asyncio.current_task()}
    assert [h for h in loop._scheduled if not h.cancelled()] == []  # type: ignore[attr-defined]


# TLS: a redis-server with a certificate from a CA made for the test.


def _openssl(*args: str, cwd: Path) -> None:
    binary = shutil.which("openssl")
    if binary is None:
        raise RuntimeError("openssl is not installed (apt-get install openssl); the TLS test never skips")
    subprocess.run([binary, *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[RedisServer, int, Path]]:
    """A redis-server that also listens with TLS; its port and the CA that signed it."""
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl(
        "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=kl-ca", cwd=tmp_path
    )
    _openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1", cwd=tmp_path)
    (tmp_path / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl(
        *("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial"),
        *("-out", "server.pem", "-days", "2", "-extfile", "san.ext"),
        cwd=tmp_path,
    )
    tls_port = free_port()
    server = RedisServer(
        *("--tls-port", str(tls_port), "--tls-auth-clients", "no"),
        *("--tls-cert-file", str(tmp_path / "server.pem"), "--tls-key-file", str(tmp_path / "server.key")),
    ).start()
    yield server, tls_port, tmp_path / "ca.pem"
    server.stop()


async def test_rediss_verifies_the_server_certificate(
    tls_server: tuple[RedisServer, int, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, tls_port, ca = tls_server
    url = f"rediss://127.0.0.1:{tls_port}/0"
    untrusted = client_for(server, url=url)
    with pytest.raises(ConnectFailed) as caught:
        await untrusted.execute(pack("PING"))
    assert caught.value.reason == "SSLCertVerificationError"
    await untrusted.aclose()

    monkeypatch.setenv("SSL_CERT_FILE", str(ca))  # what ssl.create_default_context() trusts
    trusted = client_for(server, url=url)
    assert await trusted.execute(pack("PING")) == b"PONG"
    await trusted.aclose()
