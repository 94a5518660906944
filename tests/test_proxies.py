"""trusted_proxies: behind a trusted proxy every client gets its own page limit and its own address in the logs
and the apps; anyone else's X-Forwarded-* headers move nothing."""

from __future__ import annotations

import pytest
from bokeh.util.token import get_token_payload

from harness.pageview import _TOKEN
from harness.stack import fetch
from tests.test_stack import SHIPPED_APPS

pytestmark = [pytest.mark.stack, pytest.mark.usefixtures("nginx_available")]

CLIENTS = [f"198.51.100.{i}" for i in range(1, 11)]
# One page a second beyond a burst of 2: three pages at once from one address, then 429.
LIMIT = {"page_rate_per_s": 1, "page_burst": 2}


def pages_from(stack, clients: list[str], **headers: str) -> list[int]:
    return [
        fetch(stack.url("/cosine"), headers={"X-Forwarded-For": c, "X-Real-IP": c, **headers}).code for c in clients
    ]


def test_behind_a_trusted_proxy_each_client_has_its_own_limit_address_and_scheme(stacks):
    stack = stacks(SHIPPED_APPS, workers=1, trusted_proxies=["127.0.0.1/32"], nginx=LIMIT)
    assert pages_from(stack, CLIENTS) == [200] * 10, "ten clients behind one proxy: ten page limits"

    page = fetch(stack.url("/cosine"), headers={"X-Forwarded-For": "203.0.113.9, 198.51.100.77"})
    token = _TOKEN.search(page.body).group(1).decode()
    assert get_token_payload(token)["headers"]["X-Real-Ip"] == "198.51.100.77", "the last address the proxy added"
    log = (stack.plan.log_dir / "nginx-access.log").read_text()
    assert all(f"{c} [" in log for c in CLIENTS) and "203.0.113.9 [" not in log

    # The proxy terminated TLS: cookies are Secure. (BokehJS takes wss:// from the page's https:// location.)
    https = {"X-Forwarded-For": "198.51.100.50", "X-Forwarded-Proto": "https"}
    assert "; Secure" in fetch(stack.url("/cosine"), headers=https).headers["Set-Cookie"]


def test_a_client_that_is_no_trusted_proxy_cannot_move_its_address(stacks):
    stack = stacks(SHIPPED_APPS, workers=1, trusted_proxies=["10.0.0.0/8"], nginx=LIMIT)
    page = fetch(stack.url("/cosine"), headers={"X-Forwarded-Proto": "https"})
    assert page.code == 200 and "Secure" not in page.headers["Set-Cookie"], "plain http, whatever the client says"
    statuses = pages_from(stack, CLIENTS, **{"X-Forwarded-Proto": "https", "Forwarded": "for=198.51.100.99"})
    assert statuses.count(200) <= 3 and statuses.count(429) >= 7, f"spoofed headers escaped the limit: {statuses}"
    log = (stack.plan.log_dir / "nginx-access.log").read_text()
    assert not any(f"{c} [" in log for c in CLIENTS)
