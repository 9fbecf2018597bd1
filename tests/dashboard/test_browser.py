"""The keys dashboard in headless Chromium (Debian's) against ``keylimit demo`` on a free port.

Screenshots go to ``tmp_path``, or to ``$KEYLIMIT_SCREENSHOTS`` (the README's come from
``KEYLIMIT_SCREENSHOTS=docs pytest tests/dashboard/test_browser.py``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from keylimit.demo._requests import MODEL_ID
from tests.e2e._process import KEYLIMIT, Served, clean_env

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

# The README's test command needs only Python and redis-server, so without a browser this test is
# skipped there; .ci/run installs Debian's chromium and fails on any skipped test.
CHROMIUM = shutil.which("chromium")
if CHROMIUM is None:
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ADMIN = "browser-admin-token"
WAIT_MS = 15_000  # a guard against a hung page, not a timing claim


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Served]:
    env = clean_env(KEYLIMIT_ADMIN_TOKEN=ADMIN, KEYLIMIT_KEYS_URL=f"sqlite:///{tmp_path / 'keys.db'}")
    served = Served([*KEYLIMIT, "demo", "--port", "{port}"], cwd=tmp_path, env=env)
    yield served
    served.stop()


@pytest.fixture
def page(demo: Served) -> Iterator[object]:
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        expect.set_options(timeout=WAIT_MS)
        yield page
        context.close()
        browser.close()


def test_sign_in_create_use_see_usage_revoke(demo: Served, page: object, tmp_path: Path) -> None:
    shots = Path(os.environ.get("KEYLIMIT_SCREENSHOTS", tmp_path))
    p = page
    p.goto(f"{demo.url}/dashboard/keys")  # type: ignore[attr-defined]

    # A wrong token: an error, and no data.
    p.fill("#token", "not-the-token")  # type: ignore[attr-defined]
    p.fill("#account", "acme")  # type: ignore[attr-defined]
    p.get_by_role("button", name="Sign in").click()  # type: ignore[attr-defined]
    expect(p.locator("#error")).to_contain_text("Sign-in failed")  # type: ignore[attr-defined]
    expect(p.locator("#workspace")).to_be_hidden()  # type: ignore[attr-defined]
    assert p.locator("#keys tbody tr").count() == 0  # type: ignore[attr-defined]

    # The right one, from the keyboard.
    p.fill("#token", ADMIN)  # type: ignore[attr-defined]
    p.press("#token", "Enter")  # type: ignore[attr-defined]
    expect(p.locator("#workspace")).to_be_visible()  # type: ignore[attr-defined]
    expect(p.locator("#error")).to_be_hidden()  # type: ignore[attr-defined]
    expect(p.locator("#plan")).to_have_text("free")  # type: ignore[attr-defined]
    assert p.input_value("#token") == ""  # type: ignore[attr-defined]

    # Create a key: shown once, with the warning.
    p.fill("#key-name", "browser")  # type: ignore[attr-defined]
    p.get_by_role("button", name="Create key").click()  # type: ignore[attr-defined]
    expect(p.locator("#new-key")).to_be_visible()  # type: ignore[attr-defined]
    expect(p.locator("#new-key")).to_contain_text("you will not see it again")  # type: ignore[attr-defined]
    key = p.input_value("#new-key-value")  # type: ignore[attr-defined]
    assert key.startswith("forii_sk_")
    row = p.locator("#keys tbody tr", has_text="browser")  # type: ignore[attr-defined]
    expect(row).to_contain_text("active")

    # Use it with the OpenAI SDK; the page's usage rises.
    client = openai.OpenAI(base_url=f"{demo.url}/inference/v1", api_key=key, max_retries=0)
    answer = client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "Hello"}])
    assert answer.usage is not None
    p.click("#refresh")  # type: ignore[attr-defined]
    requests = p.locator('#usage tr[data-limit="requests"] .used')  # type: ignore[attr-defined]
    expect(requests).to_have_text("1")
    completion = p.locator('#usage tr[data-limit="completion_tokens"] .used')  # type: ignore[attr-defined]
    expect(completion).to_have_text(str(answer.usage.completion_tokens))
    p.screenshot(path=str(shots / "dashboard-desktop.png"), full_page=True, mask=[p.locator("#new-key-value")])  # type: ignore[attr-defined]

    # Revoke it in the page, after the confirmation; the SDK is refused.
    p.click("#done")  # type: ignore[attr-defined]
    row.get_by_role("button", name="Revoke").click()
    expect(p.locator("#confirm")).to_be_visible()  # type: ignore[attr-defined]
    p.locator("#confirm").get_by_role("button", name="Revoke").click()  # type: ignore[attr-defined]
    expect(row).to_contain_text("revoked")
    expect(row.get_by_role("button", name="Revoke")).to_have_count(0)
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "Hello"}])

    p.set_viewport_size({"width": 390, "height": 844})  # type: ignore[attr-defined]
    p.screenshot(path=str(shots / "dashboard-narrow.png"), full_page=True)  # type: ignore[attr-defined]
