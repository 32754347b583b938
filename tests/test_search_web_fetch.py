"""The local page reader: HTML to text, huge and non-text pages, and the SSRF guard (schemes,
private/loopback/link-local addresses, names that resolve to them, redirects)."""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Iterator

import pytest
from web_fakes import FakeWeb, Reply, World, api_config, env_keys, running

from mmsr.config import build
from mmsr.search.base import SearchError
from mmsr.search.web import WebConfig, build_web
from mmsr.search.web.guard import AddressPolicy, BlockedUrl, guarded_client
from mmsr.search.web.pages import LocalReader, html_to_text


@pytest.fixture
def fake() -> Iterator[tuple[FakeWeb, World]]:
    yield from running()


def reader(allow_loopback: bool, max_bytes: int = 1_000_000) -> LocalReader:
    client = guarded_client(AddressPolicy(allow_loopback=allow_loopback), timeout_s=2.0)
    return LocalReader(client, max_bytes=max_bytes)


def test_html_to_text_drops_markup_scripts_and_styles() -> None:
    html = (
        "<html><head><title> The  Tower </title><style>p{color:red}</style></head>"
        "<body><script>alert(1)</script><p>It is   330 m <b>tall</b>.</p></body></html>"
    )
    title, text = html_to_text(html)
    assert title == "The Tower"
    assert "330 m" in text and "tall" in text
    assert "alert" not in text and "color" not in text and "<" not in text


def test_local_reader_reads_a_page(fake: tuple[FakeWeb, World]) -> None:
    _, world = fake
    world.pages["a"] = "Gustave Eiffel built it in 1889."
    page = reader(allow_loopback=True).read(world.page_url("a"))
    assert page.title == "Page a" and "built it in 1889" in page.text
    assert "tracking" not in page.text


def test_huge_page_is_cut_not_read_to_the_end(fake: tuple[FakeWeb, World]) -> None:
    web, _ = fake
    chunk = b"<p>" + b"word " * 20_000 + b"</p>"  # ~100 kB, sent 300 times: ~30 MB
    web.route("/huge", lambda r: Reply(200, chunk, {"Content-Type": "text/html"}, repeat=300))
    started = time.monotonic()
    page = reader(allow_loopback=True, max_bytes=200_000).read(web.url("/huge"))
    assert time.monotonic() - started < 3.0
    assert 150_000 < len(page.text) <= 200_000


@pytest.mark.parametrize(
    ("reply", "match"),
    [
        # a binary file is not a page
        (Reply(200, b"\x89PNG...", {"Content-Type": "image/png"}), "not text"),
        # an error status
        (Reply(503, b"busy", {"Content-Type": "text/html"}), "HTTP 503"),
        # a page with no text at all
        (
            Reply(200, b"<body><script>x()</script></body>", {"Content-Type": "text/html"}),
            "no text",
        ),
    ],
)
def test_unreadable_pages_are_search_errors(
    fake: tuple[FakeWeb, World], reply: Reply, match: str
) -> None:
    web, _ = fake
    web.route("/odd", lambda r: reply)
    with pytest.raises(SearchError, match=match):
        reader(allow_loopback=True).read(web.url("/odd"))


def test_slow_page_times_out(fake: tuple[FakeWeb, World]) -> None:
    web, _ = fake
    web.route("/slow", lambda r: Reply(200, "<p>late</p>", {"Content-Type": "text/html"}, 1.0))
    client = guarded_client(AddressPolicy(allow_loopback=True), timeout_s=0.2)
    with pytest.raises(SearchError, match="timed out"):
        LocalReader(client, max_bytes=10_000).read(web.url("/slow"))


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        # public addresses pass
        ("93.184.215.14", True),
        ("2606:4700::1111", True),
        # loopback, IPv4 and IPv6, and IPv4-mapped IPv6
        ("127.0.0.1", False),
        ("::1", False),
        ("::ffff:127.0.0.1", False),
        # private networks, carrier-grade NAT and unique-local IPv6
        ("10.1.2.3", False),
        ("172.16.5.4", False),
        ("192.168.0.1", False),
        ("100.64.0.1", False),
        ("fd00::1", False),
        # link-local, including the cloud metadata address
        ("169.254.169.254", False),
        ("fe80::1", False),
        # unspecified, multicast, reserved
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("240.0.0.1", False),
        # IPv6 tunnels that embed an IPv4 address: 6to4 of 169.254.169.254 and of a public
        # address (refused all the same: the relay decides where it goes), and Teredo
        ("2002:a9fe:a9fe::1", False),
        ("2002:5db8:d70e::1", False),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False),
    ],
)
def test_address_policy(address: str, allowed: bool) -> None:
    # pure check, no I/O: end-to-end tests below only ever aim at this machine
    policy = AddressPolicy()
    if allowed:
        policy.check(ipaddress.ip_address(address))
    else:
        with pytest.raises(BlockedUrl):
            policy.check(ipaddress.ip_address(address))


def test_loopback_allowance_is_only_for_loopback() -> None:
    policy = AddressPolicy(allow_loopback=True)
    policy.check(ipaddress.ip_address("127.0.0.1"))
    with pytest.raises(BlockedUrl):
        policy.check(ipaddress.ip_address("169.254.169.254"))


@pytest.mark.parametrize(
    ("url", "match"),
    [
        # loopback by address, by a name resolved through DNS/hosts, and IPv4-mapped IPv6
        ("http://127.0.0.1:{port}/page/a", "loopback"),
        ("http://localhost:{port}/page/a", "loopback"),
        ("http://[::ffff:127.0.0.1]:{port}/page/a", "loopback"),
        # the unspecified address (connects to this machine on Linux)
        ("http://0.0.0.0:{port}/page/a", "private"),
        # schemes other than http(s), and no host
        ("file:///etc/passwd", "scheme"),
        ("ftp://localhost/x", "scheme"),
        ("gopher://127.0.0.1:70/", "scheme"),
        ("http:///nohost", "without a host"),
        # an octal IPv4 host (httpx cannot parse it; it used to escape as InvalidURL)
        ("http://0177.0.0.1:{port}/page/a", "malformed"),
    ],
)
def test_ssrf_guard_refuses_by_default(fake: tuple[FakeWeb, World], url: str, match: str) -> None:
    web, world = fake
    world.pages["a"] = "secret internal page"
    with pytest.raises(SearchError, match=match):
        reader(allow_loopback=False).read(url.format(port=web.port))
    assert web.requests == []  # nothing reached the server


@pytest.mark.parametrize(
    ("location", "match"),
    [
        # a redirect to the unspecified address (this machine): refused although the test
        # allows loopback
        ("http://0.0.0.0:{port}/page/a", "private"),
        # to a file
        ("file:///etc/passwd", "scheme|fetch failed"),
    ],
)
def test_ssrf_guard_checks_every_redirect(
    fake: tuple[FakeWeb, World], location: str, match: str
) -> None:
    web, world = fake
    world.pages["a"] = "secret internal page"
    target = location.format(port=web.port)
    web.route("/go", lambda r: Reply(302, b"", {"Location": target}))
    with pytest.raises(SearchError, match=match):
        reader(allow_loopback=True).read(web.url("/go"))
    assert web.hits("/page/") == []


def test_allowed_redirect_is_followed(fake: tuple[FakeWeb, World]) -> None:
    web, world = fake
    world.pages["b"] = "Redirected here."
    web.route("/go", lambda r: Reply(301, b"", {"Location": world.page_url("b")}))
    assert "Redirected here." in reader(allow_loopback=True).read(web.url("/go")).text


def test_text_chain_with_local_reader_uses_the_guard(fake: tuple[FakeWeb, World]) -> None:
    web, world = fake
    world.results["q"] = ["a", "b"]
    world.pages.update(a="Alpha page.", b="Beta page.")
    config = build(WebConfig, api_config(web, reader="local"))
    text = build_web(config, env=env_keys()).text
    assert text is not None
    assert [h.url for h in text.search("q", 5)] == [world.page_url("a"), world.page_url("b")]
    assert web.hits("/jina") == [] and len(web.hits("/page/")) == 2
    assert text.stats()["fetch"]["calls"] == 2
    # the same chain without the test's loopback allowance refuses the loopback pages
    config = build(WebConfig, api_config(web, reader="local", allow_loopback=False))
    guarded = build_web(config, env=env_keys()).text
    assert guarded is not None
    with pytest.raises(SearchError, match="pages failed"):
        guarded.search("q", 5)


def test_public_looking_name_resolving_to_loopback_is_refused(
    fake: tuple[FakeWeb, World], monkeypatch: pytest.MonkeyPatch
) -> None:
    # the check is on resolved addresses, not on the name: a DNS answer pointing at this
    # machine is refused (the fake server would record any request that got through)
    web, world = fake
    world.pages["a"] = "internal"
    real = socket.getaddrinfo

    def fake_dns(host: str, *args: object, **kwargs: object) -> list[object]:
        if host == "www.innocent.example":
            return real("127.0.0.1", *args, **kwargs)  # type: ignore[arg-type]
        return real(host, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", fake_dns)
    with pytest.raises(SearchError, match="loopback"):
        reader(allow_loopback=False).read(f"http://www.innocent.example:{web.port}/page/a")
    assert web.requests == []
    # and with loopback allowed (as tests do) the same name reaches the fake server
    page = reader(allow_loopback=True).read(f"http://www.innocent.example:{web.port}/page/a")
    assert "internal" in page.text and len(web.requests) == 1
