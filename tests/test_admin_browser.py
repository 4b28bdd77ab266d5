"""The operators' admin pages for prewarm and API tokens.

End to end: Debian's chromium (driven by selenium through Debian's chromedriver, so nothing is
downloaded) logs in to a real gunicorn with a real Celery worker on Redis, starts a prewarm job
with the admin's form, and watches the job's page, which reloads itself, reach 100%. The
screenshot is kept at test-artifacts/admin-prewarm.png (git-ignored). The form rules (bad
references, the token shown once, cancel, the budget column) are checked with Django's test
client, which is enough for them.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from mirror.models import AlwaysWarm, ApiToken, PrewarmItem, PrewarmJob, Upstream, UpstreamBudget
from tests.conftest import Upstreams, write_config
from tests.mirror_server import MirrorServer
from tests.support.worker import CeleryWorker, redis_url

ROOT = Path(__file__).resolve().parent.parent
ARTIFACT = ROOT / "test-artifacts" / "admin-prewarm.png"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
PASSWORD = "browser-test-pw"
WAIT = 60  # seconds for the job to reach 100%
JOB_ENDED = ("succeeded", "partial", "failed", "cancelled")


# --- The admin's rules, with Django's test client.


@pytest.fixture
def admin_client(db: None) -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("ops", "ops@example.com", "pw"))
    return client


def test_start_form_shows_what_is_wrong(admin_client: Client) -> None:
    url = "/admin/mirror/prewarmjob/add/"
    page = admin_client.get(url).content.decode()
    assert 'name="images"' in page and 'name="modules"' in page and 'value="all"' in page
    empty = admin_client.post(url, {"images": "\n \n", "modules": "", "platforms": "all"})
    assert "Name at least one image or module." in empty.content.decode()
    bad = admin_client.post(url, {"images": "Bad Name!!:x", "modules": "", "platforms": "all"})
    assert bad.status_code == 200
    assert "Bad Name!!:x" in bad.content.decode()  # the reference, with what is wrong with it
    assert "errorlist" in bad.content.decode()
    platform = admin_client.post(url, {"images": "alpine", "platforms": "amd64, linux/arm64"})
    assert "not a platform (os/arch[/variant]): amd64" in platform.content.decode()
    assert not PrewarmJob.objects.exists()


def _job(status: str, *items: tuple[str, int, int]) -> PrewarmJob:
    job = PrewarmJob.objects.create(status=status, source="api", requested_by="ci")
    for item_status, done, total in items:
        PrewarmItem.objects.create(
            job=job,
            kind="image",
            reference=f"docker.io/library/x{done}:1",
            status=item_status,
            bytes_done=done,
            bytes_total=total,
        )
    return job


def test_job_pages_show_progress_and_refresh_while_running(admin_client: Client) -> None:
    running = _job("running", ("succeeded", 300, 300), ("running", 100, 700), ("queued", 0, 0))
    ended = _job("succeeded", ("succeeded", 0, 0))  # already cached: no bytes to fetch
    listing = admin_client.get("/admin/mirror/prewarmjob/?status__exact=running").content.decode()
    assert '<progress value="40" max="100"' in listing  # 400 of 1000 bytes
    assert "1/3" in listing
    assert f"prewarm #{ended.pk}" not in listing  # filtered by status
    page = admin_client.get(f"/admin/mirror/prewarmjob/{running.pk}/change/").content.decode()
    assert '<meta http-equiv="refresh" content="2">' in page
    assert '<progress value="100" max="100"' in page  # the first item
    assert '<progress value="14" max="100"' in page  # the second: 100 of 700
    assert 'id="cancel-job"' in page
    assert 'name="_save"' not in page  # read-only
    page = admin_client.get(f"/admin/mirror/prewarmjob/{ended.pk}/change/").content.decode()
    assert 'http-equiv="refresh"' not in page and 'id="cancel-job"' not in page
    assert '<span class="progress-text">100%</span>' in page


def test_cancel_from_the_list_and_the_page(admin_client: Client) -> None:
    one = _job("queued", ("queued", 0, 0))
    two = _job("queued", ("queued", 0, 0))
    action = {"action": "cancel_jobs", "_selected_action": [one.pk]}
    assert admin_client.post("/admin/mirror/prewarmjob/", action).status_code == 302
    one.refresh_from_db()
    assert (one.status, one.cancel_requested) == ("cancelled", True)
    assert one.items.get().status == "cancelled"
    assert admin_client.get(f"/admin/mirror/prewarmjob/{two.pk}/cancel/").status_code == 405
    answer = admin_client.post(f"/admin/mirror/prewarmjob/{two.pk}/cancel/")
    assert answer["Location"] == f"/admin/mirror/prewarmjob/{two.pk}/change/"
    two.refresh_from_db()
    assert two.status == "cancelled"


def test_token_is_shown_once_and_can_be_revoked(admin_client: Client) -> None:
    answer = admin_client.post("/admin/mirror/apitoken/add/", {"name": "ci", "scopes": ["prewarm"]})
    page = answer.content.decode()
    assert "no-store" in answer["Cache-Control"]
    token = page.split('<code id="new-token"', 1)[1].split(">", 1)[1].split("<", 1)[0]
    row = ApiToken.objects.get(name="ci")
    assert token.startswith(row.prefix) and row.scopes == ["prewarm"]
    assert row.digest not in page
    for url in ("/admin/mirror/apitoken/", f"/admin/mirror/apitoken/{row.pk}/change/"):
        shown = admin_client.get(url).content.decode()
        assert token not in shown and row.digest not in shown and row.prefix in shown
    again = admin_client.post("/admin/mirror/apitoken/add/", {"name": "ci", "scopes": ["read"]})
    assert "A token of this name exists." in again.content.decode()
    action = {"action": "revoke", "_selected_action": [row.pk]}
    admin_client.post("/admin/mirror/apitoken/", action)
    assert ApiToken.objects.get(pk=row.pk).revoked


def test_always_warm_refuses_what_cannot_be_warmed(admin_client: Client) -> None:
    data = {"kind": "image", "reference": "Bad Name!!", "platforms": "[]", "enabled": "on"}
    answer = admin_client.post("/admin/mirror/alwayswarm/add/", data)
    assert answer.status_code == 200 and "errorlist" in answer.content.decode()
    assert not AlwaysWarm.objects.exists()


def test_upstream_list_shows_its_budget(admin_client: Client) -> None:
    hub = Upstream.objects.create(name="hub", kind="oci", url="https://r.example", prefix="d.io")
    until = timezone.now() + timezone.timedelta(minutes=5)
    UpstreamBudget.objects.create(
        upstream=hub, limit=100, remaining=7, blocked_until=until, updated=timezone.now()
    )
    Upstream.objects.create(name="other", kind="go", url="https://proxy.example")
    page = admin_client.get("/admin/mirror/upstream/").content.decode()
    assert '<td class="field-budget_remaining">7/100</td>' in page
    assert "Budget (remaining/limit)" in page
    assert admin_client.get("/admin/mirror/upstreambudget/").status_code == 200
    assert admin_client.get("/admin/mirror/quarantinedobject/").status_code == 200


# --- End to end in a real browser.


@pytest.fixture
def served(tmp_path: Path, upstreams: Upstreams) -> Iterator[MirrorServer]:
    """A mirror with a Celery worker on a Redis database of its own, and a superuser."""
    config = write_config(tmp_path / "mirror.yml", upstreams)
    server = MirrorServer(tmp_path / "var", config, REDIS_URL=redis_url())
    server.setup()
    server.env.update(DJANGO_SUPERUSER_PASSWORD=PASSWORD)
    server.manage("createsuperuser", "--noinput", "--username", "ops", "--email", "o@x.test")
    with CeleryWorker(server.env, tmp_path / "worker.log"):
        server.start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def browser() -> Iterator[object]:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    if missing:
        pytest.fail(f"missing {missing}: run the tests with `make test`", pytrace=False)
    from selenium import webdriver

    profile = tempfile.mkdtemp(prefix="entrepot-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1400,1400",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(
        service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=options
    )
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def test_admin_starts_a_job_and_sees_it_reach_100(
    served: MirrorServer, upstreams: Upstreams, browser
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    upstreams.seed("library/browsertest:1", platforms=[("linux", "amd64"), ("linux", "arm64")])
    browser.get(f"{served.url}/admin/login/?next=/admin/mirror/prewarmjob/add/")
    browser.find_element(By.NAME, "username").send_keys("ops")
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    images = WebDriverWait(browser, 15).until(lambda d: d.find_element(By.NAME, "images"))
    images.send_keys("browsertest:1")
    platforms = browser.find_element(By.NAME, "platforms")
    platforms.clear()
    platforms.send_keys("linux/arm64")
    browser.find_element(By.CSS_SELECTOR, "input[type=submit][name=_save]").click()

    def finished(driver) -> bool:
        status = driver.find_elements(By.CSS_SELECTOR, ".field-status .readonly")
        return bool(status) and status[0].text.lower() in JOB_ENDED

    WebDriverWait(browser, WAIT, poll_frequency=0.5).until(finished)
    assert "/admin/mirror/prewarmjob/" in browser.current_url
    assert browser.find_element(By.CSS_SELECTOR, ".field-status .readonly").text == "Succeeded"
    texts = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".progress-text")]
    assert texts and all(t == "100%" for t in texts), texts
    bars = browser.find_elements(By.TAG_NAME, "progress")
    assert bars and all(b.get_attribute("value") == "100" for b in bars)
    reference = browser.find_element(By.CSS_SELECTOR, "td.field-reference").text
    assert reference.endswith("browsertest:1")
    assert "linux/arm64" in browser.find_element(By.CSS_SELECTOR, "td.field-platforms").text
    ARTIFACT.parent.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACT))
    print(f"screenshot: {ARTIFACT}")

    browser.get(f"{served.url}/")
    front = browser.find_element(By.TAG_NAME, "body").text
    assert f'"registry-mirrors": ["http://{served.host}"]' in front
    assert f"docker pull {served.host}/ghcr.io/org/image:tag" in front
