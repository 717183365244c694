"""The web console in a real browser against a real engine (issue 16).

One engine for the module, fed as a hospital would feed it: a chest radiograph by dcmtk's
storescu, a second study from a sender a rule holds, an ADT^A01 over MLLP, and a message no
consumer can read (a dead letter). People are added with `doctorai users add`. Debian's chromium,
driven by Playwright, then signs in and out, is locked out, is refused what its role may not do,
and runs the flows end to end: a rule written and dry-run, a destination added and echoed, a
dead letter replayed, a held study released until its report shows, a model uploaded and
activated. Every page passes axe-core without a serious violation, and is saved as a screenshot
(the folder is printed at the end of the run).
"""

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from playwright.sync_api import Browser, Page, expect
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from sqlalchemy import func, select

from doctorai.stack import engine_env
from fhir_api.auth.tokens import issue_token
from fhir_api.config import ApiSettings
from integration import topics
from integration.kafka import make_producer
from storage.db import make_engine, session_scope
from storage.tables.index import Study
from storage.tables.pipeline import DeadLetter, Report
from tests.conftest import EngineRun
from tests.console_browser import accessible, chromium, person, screenshot, show, sign_in, sign_out
from tests.mllp_peers import sample, send, wait_for

pytestmark = pytest.mark.stack

PASSWORD = "correct horse battery staple"
RG1 = Path(str(get_testdata_file("RG1_UNCR.dcm")))
STUDY_UID = str(pydicom.dcmread(RG1, stop_before_pixels=True).StudyInstanceUID)
HOLD_RULE = {"name": "hold-from-holdpacs", "priority": 10, "match": {"calling_aes": ["HOLDPACS"]}, "hold": True}


@dataclass
class Console:
    """The engine, its console's address, a browser, and where screenshots go."""

    run: EngineRun
    base: str
    browser: Browser
    shots: Path
    held_uid: str

    def admin_api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Call the admin API with a token, as a script would."""
        token = issue_token(ApiSettings(), subject="console-test", scopes=[], roles=["admin"])
        return httpx.request(method, f"{self.base}/admin{path}", headers={"Authorization": f"Bearer {token}"}, **kwargs)

    def count(self, stmt: Any) -> int:
        """One number from the engine's database."""
        engine = make_engine(self.run.config.storage_settings().resolved_database_url())
        try:
            with session_scope(engine) as session:
                return int(session.scalar(stmt) or 0)
        finally:
            engine.dispose()


def _users_add(env: dict[str, str], name: str, role: str) -> None:
    argv = [sys.executable, "-m", "doctorai.cli", "users", "add", name, "--role", role, "--password-stdin"]
    done = subprocess.run(argv, input=PASSWORD + "\n", env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and f"{name} added" in done.stdout, done.stderr


def _storescu(run: EngineRun, path: Path, *, calling: str) -> None:
    argv = ["storescu", "-aec", "DOCTORAI", "-aet", calling, "127.0.0.1", str(run.config.ports.dicom), str(path)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr + done.stdout


def _held_study(folder: Path) -> tuple[Path, str]:
    """RG1 as another study of another patient (new UIDs), to come from the held sender."""
    ds = pydicom.dcmread(RG1)
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientID, ds.AccessionNumber = "HOLD-1", "ACC-HOLD"
    path = folder / "held.dcm"
    ds.save_as(path)
    return path, str(ds.StudyInstanceUID)


async def _unreadable_event(run: EngineRun) -> None:
    """A study.ready event no consumer can read: it ends as a dead letter."""
    settings = run.config.integration_settings()
    producer = make_producer(settings)
    await producer.start()
    try:
        await producer.send_and_wait(topics.qualified(settings.topic_prefix, topics.STUDY_READY), b'{"study_uid": 42}', key=b"broken")
    finally:
        await producer.stop()


@pytest.fixture(scope="module")
def console(module_engine_run: EngineRun, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Console]:
    """The engine with real data in it, people to sign in, and a browser."""
    run = module_engine_run
    run.start()
    env = engine_env(run.config)
    for name, role in (("ada", "admin"), ("otto", "operator"), ("alma", "auditor"), ("lou", "operator")):
        _users_add(env, name, role)
    base = f"http://127.0.0.1:{run.config.ports.http}"
    folder = tmp_path_factory.mktemp("console")
    held, held_uid = _held_study(folder)
    console = Console(run, base, browser=None, shots=tmp_path_factory.mktemp("console-screenshots"), held_uid=held_uid)  # type: ignore[arg-type]
    assert console.admin_api("POST", "/rules", json=HOLD_RULE).status_code == 201
    _storescu(run, RG1, calling="TESTPACS")
    _storescu(run, held, calling="HOLDPACS")
    [ack] = send(run.config.ports.mllp, sample("adt_a01_v251.hl7"))
    assert b"MSA|CA" in ack  # the sample asks for enhanced mode (MSH-15 AL)
    asyncio.run(_unreadable_event(run))
    wait_for(lambda: console.count(select(func.count()).select_from(Report)) >= 1, timeout=240, what="the first report")
    wait_for(lambda: console.count(select(func.count()).where(Study.status == "held")) == 1, timeout=60, what="the held study")
    wait_for(lambda: console.count(select(func.count()).select_from(DeadLetter)) >= 1, timeout=60, what="a dead letter")
    with chromium() as browser:
        console.browser = browser
        yield console
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"console screenshots: {console.shots}")


@pytest.fixture
def admin(console: Console) -> Iterator[Page]:
    """A page signed in as the admin."""
    with person(console.browser, console.base) as page:
        sign_in(page, "ada", PASSWORD)
        expect(page.get_by_role("heading", level=1, name="Overview")).to_be_visible()
        yield page


def test_sign_in_sets_a_strict_http_only_cookie_and_sign_out_ends_the_session(console: Console) -> None:
    with person(console.browser, console.base) as page:
        sign_in(page, "ada", PASSWORD)
        expect(page.get_by_role("heading", level=1, name="Overview")).to_be_visible()
        [cookie] = page.context.cookies()
        assert cookie["name"] == "doctorai_session" and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        # The session is a credential on the admin API, but a change without its CSRF token is refused.
        refused = page.request.post(f"{console.base}/admin/rules/validate", data={"name": "x", "hold": True})
        assert refused.status == 403
        sign_out(page)
        assert page.request.get(f"{console.base}/admin/studies").status == 401
        # The old cookie opens nothing either.
        again = httpx.get(f"{console.base}/admin/studies", cookies={cookie["name"]: cookie["value"]})
        assert again.status_code == 401


def test_sign_in_and_an_action_by_keyboard(console: Console) -> None:
    with person(console.browser, console.base) as page:
        page.goto("/console")
        expect(page.get_by_label("Name")).to_be_focused()
        page.keyboard.type("ada")
        page.keyboard.press("Tab")
        page.keyboard.type(PASSWORD)
        page.keyboard.press("Enter")
        expect(page.get_by_role("heading", level=1, name="Overview")).to_be_visible()
        show(page, "rules", "Rules")
        # From the page (focused when shown), Tab to a rule's edit button and press it.
        edit = page.get_by_role("button", name="Edit chest-radiographs-to-pneumonia-model")
        for _ in range(40):
            if edit.evaluate("b => b === document.activeElement"):
                break
            page.keyboard.press("Tab")
        else:
            pytest.fail("Tab never reached the rule's edit button")
        page.keyboard.press("Enter")
        expect(page.get_by_role("heading", name="Edit rule chest-radiographs-to-pneumonia-model")).to_be_visible()


def test_lock_out_after_repeated_failures(console: Console) -> None:
    with person(console.browser, console.base) as page:
        for _ in range(5):
            sign_in(page, "lou", "not the password at all")
            expect(page.get_by_role("alert")).to_contain_text("Sign-in refused")
        sign_in(page, "lou", PASSWORD)
        expect(page.get_by_role("alert")).to_contain_text("locked")
    token = issue_token(ApiSettings(), subject="officer", scopes=["system/AuditEvent.rs"], roles=["auditor"])
    found = httpx.get(f"{console.base}/admin/audit", params={"subtype": "user-locked-out", "agent": "lou"},
                      headers={"Authorization": f"Bearer {token}"}).json()
    assert found["total"] == 1
    assert console.admin_api("POST", "/users/lou/unlock").status_code == 200


# (route, heading, text the page must show from the engine's data, screenshot name)
PAGES = [
    ("overview", "Overview", "running", "overview"),
    ("studies", "Studies", "9RG1", "studies"),
    (f"studies/{STUDY_UID}", re.compile("."), "chest-xray-pneumonia", "study"),
    ("rules", "Rules", "hold-from-holdpacs", "rules"),
    ("destinations", "Destinations and peers", "Peers", "destinations"),
    ("models", "Models", "chest-xray-pneumonia", "models"),
    ("models/chest-xray-pneumonia", "chest-xray-pneumonia", "Versions", "model"),
    ("dead-letters", "Dead letters", "study.ready", "dead-letters"),
    ("hl7", "HL7 messages", "ADT0001", "hl7"),
    ("people", "Users and API clients", "alma", "people"),
]


def test_every_page_shows_its_data_accessibly(console: Console, admin: Page) -> None:
    for route, heading, text, name in PAGES:
        show(admin, route, heading)
        expect(admin.locator("main")).to_contain_text(text)
        accessible(admin)
        screenshot(admin, console.shots, name)
    # The processes the stack started beat, each shown running.
    show(admin, "overview", "Overview")
    processes = admin.get_by_role("table", name="Every process and its last heartbeat")
    for process in ("api", "integration", "results", "inference-chest-xray-pneumonia", "dicom-listener", "hl7-listener"):
        row = processes.get_by_role("row").filter(has=admin.get_by_role("cell", name=process, exact=True))
        expect(row.first).to_contain_text("running")
    # An HL7 message segment by segment, with its ACK and unmapped fields.
    show(admin, "hl7", "HL7 messages")
    admin.get_by_role("link", name="ADT^A01").click()
    expect(admin.get_by_role("heading", level=1, name=re.compile("ADT\\^A01 ADT0001"))).to_be_visible()
    expect(admin.get_by_role("rowheader", name="PID")).to_be_visible()
    expect(admin.locator("main")).to_contain_text("ZPI[1]-1")
    accessible(admin)
    screenshot(admin, console.shots, "hl7-message")


def test_an_operator_sees_no_admin_actions_and_is_refused_them(console: Console) -> None:
    with person(console.browser, console.base) as page:
        sign_in(page, "otto", PASSWORD)
        expect(page.get_by_role("heading", level=1, name="Overview")).to_be_visible()
        nav = page.get_by_role("navigation", name="Console sections")
        expect(nav.get_by_role("link", name="Studies")).to_be_visible()
        expect(nav.get_by_role("link", name="Audit")).to_have_count(0)
        expect(nav.get_by_role("link", name="Users and API clients")).to_have_count(0)
        show(page, "rules", "Rules")
        expect(page.get_by_role("button", name="New rule")).to_have_count(0)
        show(page, "dead-letters", "Dead letters")
        expect(page.get_by_role("button", name="Replay the selected letters")).to_have_count(0)
        show(page, f"studies/{console.held_uid}", re.compile("."))
        expect(page.get_by_role("button", name="Release")).to_have_count(0)
        screenshot(page, console.shots, "operator-dead-letters")
        # The server refuses the change anyway, with the session's own CSRF token.
        csrf = page.evaluate("fetch('/console/session').then(r => r.json()).then(m => m.csrf_token)")
        refused = page.request.post(f"{console.base}/admin/studies/{console.held_uid}/release", headers={"X-CSRF-Token": csrf})
        assert refused.status == 403
        assert page.request.get(f"{console.base}/admin/users").status == 403


def test_an_auditor_sees_the_audit_page_and_verifies_the_chain(console: Console) -> None:
    with person(console.browser, console.base) as page:
        sign_in(page, "alma", PASSWORD)
        expect(page.get_by_role("heading", level=1, name="Audit trail")).to_be_visible()
        nav = page.get_by_role("navigation", name="Console sections")
        expect(nav.get_by_role("link")).to_have_count(1)
        page.get_by_label("Event").fill("user-signed-in")
        page.get_by_role("button", name="Search").click()
        expect(page.get_by_role("cell", name="alma", exact=False).first).to_be_visible()
        page.get_by_role("button", name="Verify the chain now").click()
        expect(page.locator("main")).to_contain_text("intact")
        accessible(page)
        screenshot(page, console.shots, "audit")
        assert page.request.get(f"{console.base}/admin/studies").status == 403


def test_a_rule_written_in_the_editor_is_validated_saved_and_dry_run(console: Console, admin: Page) -> None:
    show(admin, "rules", "Rules")
    admin.get_by_role("button", name="New rule").click()
    editor = admin.get_by_label("Rule (JSON)")
    # Validated by the API as one types: a rule without an action is refused, with the reason.
    editor.fill('{"name": "forward-cr", "match": {"modalities": ["CR"]}}')
    expect(admin.locator("#rule-check")).to_contain_text("needs an action")
    editor.fill('{"name": "forward-cr", "priority": 50, "match": {"modalities": ["CR"]}, "run": [{"model": "chest-xray-pneumonia"}]}')
    expect(admin.locator("#rule-check")).to_contain_text("The rule is valid")
    admin.get_by_role("button", name="Save as a new rule").click()
    expect(admin.get_by_role("cell", name="forward-cr", exact=True)).to_be_visible()
    admin.get_by_label("Study Instance UID").fill(STUDY_UID)
    admin.get_by_role("button", name="Dry run").click()
    outcome = admin.get_by_role("status").filter(has_text="Dry run on")
    expect(outcome).to_contain_text("Run chest-xray-pneumonia on 1 instance(s) of 1 series (forward-cr)")
    accessible(admin)
    screenshot(admin, console.shots, "rule-dry-run")


def test_a_destination_added_in_the_console_answers_its_echo(console: Console, admin: Page) -> None:
    show(admin, "destinations", "Destinations and peers")
    admin.get_by_role("button", name="Add a destination").click()
    admin.get_by_label("Kind").select_option("dicom")
    admin.get_by_label("Name", exact=True).fill("self")
    admin.get_by_label("Host", exact=True).fill("127.0.0.1")
    admin.get_by_label("Port").fill(str(console.run.config.ports.dicom))
    # The engine's own listener: it answers C-ECHO as any DICOM node would (PS3.7 9.3.5).
    admin.get_by_label("Called AE title").fill("DOCTORAI")
    admin.get_by_role("button", name="Add destination").click()
    expect(admin.get_by_role("cell", name="self", exact=True)).to_be_visible()
    admin.get_by_role("button", name="Echo self").click()
    expect(admin.locator("main")).to_contain_text("echo ok")
    accessible(admin)
    screenshot(admin, console.shots, "destination-echo")


def test_a_dead_letter_is_inspected_and_replayed(console: Console, admin: Page) -> None:
    show(admin, "dead-letters", "Dead letters")
    first = admin.get_by_role("checkbox").first
    number = first.get_attribute("aria-label")
    assert number is not None
    admin.get_by_role("button", name=re.compile("^Inspect ")).first.click()
    expect(admin.locator("main")).to_contain_text('"study_uid": 42')
    first.check()
    admin.get_by_role("button", name="Replay the selected letters").click()
    expect(admin.get_by_role("status")).to_contain_text("replayed onto their topics")
    admin.get_by_label("State").select_option("replayed")
    admin.get_by_role("button", name="Show").click()
    expect(admin.get_by_role("checkbox", name=number)).to_be_visible()


def test_a_held_study_released_in_the_console_gets_its_report(console: Console, admin: Page) -> None:
    show(admin, f"studies/{console.held_uid}", re.compile("."))
    expect(admin.locator("main")).to_contain_text("held")
    expect(admin.locator("main")).to_contain_text("No report yet.")
    admin.get_by_role("button", name="Release").click()
    expect(admin.get_by_role("status")).to_contain_text("Released as revision")

    def reported() -> bool:
        admin.reload()
        # The page renders once its API calls answer (slowly on a loaded machine): look at the
        # reports card only when it is there, or every look may come before the page is drawn.
        expect(admin.get_by_role("heading", level=2, name="Reports as an EHR reads them")).to_be_visible()
        return admin.get_by_role("heading", level=3, name=re.compile("^chest-xray-pneumonia")).count() > 0

    wait_for(reported, timeout=240, what="the released study's report in the console")
    expect(admin.locator("main")).to_contain_text("DiagnosticReport/")
    accessible(admin)
    screenshot(admin, console.shots, "study-report")


def test_a_model_package_uploaded_in_the_console_is_activated(console: Console, admin: Page, tmp_path: Path) -> None:
    from tests.fhir_api.test_admin_models import _tiny_onnx, _zip
    from tests.integration.models.test_registry import manifest

    archive = tmp_path / "tiny-console.zip"
    m = manifest("tiny-console", "1.0.0")
    archive.write_bytes(_zip({"tiny-console/manifest.json": m.model_dump_json().encode(), "tiny-console/model.onnx": _tiny_onnx()}))
    show(admin, "models", "Models")
    admin.get_by_label("Package archive").set_input_files(str(archive))
    admin.get_by_role("button", name="Upload package").click()
    admin.get_by_role("link", name="Open tiny-console to activate it").click()
    expect(admin.get_by_role("heading", level=1, name="tiny-console")).to_be_visible()
    admin.get_by_role("button", name="Activate 1.0.0").click()
    expect(admin.get_by_role("cell", name="active", exact=True)).to_be_visible()
    facts = admin.get_by_role("region", name="Last 30 days")
    expect(facts.locator("dt", has_text="Active version").locator("xpath=following-sibling::dd[1]")).to_have_text("1.0.0")
    screenshot(admin, console.shots, "model-activated")
