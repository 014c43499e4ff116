"""The web pages in a real browser: Debian's headless Chromium, driven over WebDriver.

Starts `docstore serve` (embedded default, development sign-in) on 127.0.0.1 with a fresh data
directory, seeds it through the REST API, and walks the staff and patient flows, the attacks
(XSS, CSRF, a stale session cookie) and the upload page. Run by scripts/ui-test.sh:

    DOCSTORE_BIN=target/debug/docstore python -m unittest tests/ui/test_pages.py

Screenshots go to DOCSTORE_UI_SCREENSHOTS (docs/ui/ when refreshing the README's pictures).
"""

import base64
import http.client
import json
import os
import re
import socket
import sys
import subprocess
import tempfile
import time
import unittest
import urllib.parse

from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

BIN = os.environ.get("DOCSTORE_BIN", "target/debug/docstore")
SHOTS = os.environ.get("DOCSTORE_UI_SCREENSHOTS")
XSS_SCRIPT = "<script>alert(1)</script>"
XSS_IMG = '"><img src=x onerror=alert(1)>'


def pdf(lines):
    """A one-page PDF whose text layer holds `lines` (ASCII), built by hand: objects, xref, trailer."""
    def esc(s):
        return s.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    ops = ["BT", "/F1 12 Tf", "14 TL", "56 780 Td"]
    for line in lines:
        ops.append("(%s) Tj T*" % esc(line))
    ops.append("ET")
    stream = "\n".join(ops).encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


class Http:
    """Plain HTTP to the service (no redirects followed), for what a browser hides: headers, status."""

    def __init__(self, addr):
        self.host, self.port = addr.split(":")

    def request(self, method, path, body=None, headers=None):
        c = http.client.HTTPConnection(self.host, int(self.port), timeout=30)
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        c.close()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service_:
    def __init__(self, listen="127.0.0.1:0", args=()):
        self.dir = tempfile.mkdtemp(prefix="docstore-ui-")
        self.env = dict(os.environ, DOCSTORE_DATA_DIR=os.path.join(self.dir, "data"), RUST_LOG="warn")
        subprocess.run([BIN, "init"], env=self.env, check=True, capture_output=True)
        self.log = open(os.path.join(self.dir, "serve.log"), "w+")
        self.proc = subprocess.Popen([BIN, "serve", "--listen", listen, *args], env=self.env,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        self.addr = None
        while time.time() < deadline and self.addr is None:
            self.log.seek(0)
            m = re.search(r"listening on http://(127\.0\.0\.1:\d+)", self.log.read())
            if m:
                self.addr = m.group(1)
            elif self.proc.poll() is not None:
                break
            else:
                time.sleep(0.1)
        if self.addr is None:
            self.log.seek(0)
            raise RuntimeError("docstore serve did not start:\n" + self.log.read())
        self.base = "http://" + self.addr
        self.http = Http(self.addr)
        self.staff_token = None if args else self.token("staff", "seed")

    def token(self, role, sub, patient=None):
        args = [BIN, "token", "--role", role, "--sub", sub, "--ttl", "1h"]
        if patient:
            args += ["--patient", patient]
        return subprocess.run(args, env=self.env, check=True, capture_output=True, text=True).stdout.strip()

    def api(self, method, path, body=None, headers=None, token=None):
        h = {"Authorization": "Bearer " + (token or self.staff_token)}
        h.update(headers or {})
        return self.http.request(method, path, body, h)

    def upload(self, patient, exam, body, media_type="application/pdf"):
        q = urllib.parse.urlencode({"patient": patient, "exam": exam, "kind": "report"})
        status, _, data = self.api("POST", "/v1/documents?" + q, body, {"Content-Type": media_type})
        assert status == 201, (status, data)
        return json.loads(data)["document_id"]

    def release(self, exam):
        status, _, data = self.api("POST", "/v1/exams/%s/release" % exam)
        assert status == 200, (status, data)

    def search_total(self, q):
        status, _, data = self.api("GET", "/v1/search?" + urllib.parse.urlencode({"q": q}))
        assert status == 200, (status, data)
        return json.loads(data)["total"]

    def processed(self, doc):
        status, _, data = self.api("GET", "/v1/documents/%s/versions" % doc)
        assert status == 200, (status, data)
        v = json.loads(data)["items"][-1]
        return v["state"] == "processed" and any(r["stage"] == "thumbnail" for r in v["renditions"])

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def browser(width=1280, downloads=None):
    o = webdriver.ChromeOptions()
    o.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              "--window-size=%d,900" % width, "--lang=pt-BR", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--disable-default-apps", "--no-proxy-server"):
        o.add_argument(a)
    o.add_experimental_option("prefs", {
        "intl.accept_languages": "pt-BR,pt",
        "download.default_directory": downloads or tempfile.mkdtemp(prefix="docstore-dl-"),
        "download.prompt_for_download": False,
        "plugins.always_open_pdf_externally": True,
    })
    d = webdriver.Chrome(service=Service(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")), options=o)
    d.set_page_load_timeout(30)
    if width < 600:
        # Phone width: the window's minimum is larger than a phone, the viewport need not be.
        d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                          {"width": width, "height": 844, "deviceScaleFactor": 1, "mobile": True})
    return d


def documented_page_headers():
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "..", "..", "docs", "pages.md"), encoding="utf-8") as fh:
        text = fh.read()
    block = text.split("<!-- page-csp -->", 1)[1].split("```", 2)[1]
    return dict(line.split(": ", 1) for line in block.strip().splitlines())


def wait(d, cond, secs=15):
    return WebDriverWait(d, secs).until(cond)


def no_dialog(test, d):
    try:
        a = d.switch_to.alert
        text = a.text
        a.dismiss()
        test.fail("a dialog opened: %r" % text)
    except NoAlertPresentException:
        pass


def cookie(d):
    c = d.get_cookie("docstore_session")
    return c["value"] if c else None


def downloaded(folder, secs=20):
    """The bytes of the one file a download put in `folder` (Chromium's partial and temporary
    files are not it)."""
    deadline = time.time() + secs
    while time.time() < deadline:
        done = [f for f in os.listdir(folder) if not f.startswith(".") and not f.endswith(".crdownload")]
        if done:
            with open(os.path.join(folder, done[0]), "rb") as fh:
                return fh.read()
        time.sleep(0.2)
    raise AssertionError("no download in %s" % folder)


class Pages(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        s = cls.s = Service_()
        cls.report = pdf(["Laudo de exames laboratoriais", "Hemoglobina glicada (HbA1c): 5,4 %",
                          "Glicemia de jejum: 92 mg/dL", "Valores de referencia: 4,0 a 5,6 %"])
        cls.hostile = pdf(["Hemoglobina glicada 6,1 % " + XSS_SCRIPT, "Observacao: " + XSS_IMG,
                           "Creatinina 0,9 mg/dL"])
        cls.doc = s.upload("pac-1", "exm-1", cls.report)
        cls.xss = s.upload("pac-1", "exm-2", cls.hostile)
        cls.other = s.upload("pac-2", "exm-3", pdf(["Hemoglobina glicada 7,0 %", "paciente dois"]))
        cls.unreleased = s.upload("pac-1", "exm-4", pdf(["Colesterol total 180 mg/dL", "lipidograma"]))
        for e in ("exm-1", "exm-2", "exm-3"):
            s.release(e)
        deadline = time.time() + 120
        docs = [cls.doc, cls.xss, cls.other, cls.unreleased]
        while time.time() < deadline:
            if all(s.processed(d) for d in docs) and s.search_total('"hemoglobina glicada"') >= 3:
                break
            time.sleep(0.25)
        else:
            raise AssertionError("the seeded documents were not processed in time")

    @classmethod
    def tearDownClass(cls):
        cls.s.stop()

    def shot(self, d, name):
        if SHOTS:
            os.makedirs(SHOTS, exist_ok=True)
            w = d.execute_script("return window.innerWidth")
            h = d.execute_script("return document.documentElement.scrollHeight")
            # The whole page, not only the first screen.
            png = d.execute_cdp_cmd("Page.captureScreenshot", {
                "format": "png", "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": w, "height": min(h, 4000), "scale": 1}})["data"]
            with open(os.path.join(SHOTS, "%s-%d.png" % (name, w)), "wb") as fh:
                fh.write(base64.b64decode(png))

    def sign_in(self, d, subject, role, patient=""):
        d.get(self.s.base + "/entrar")
        self.assertIn("não usar em produção", d.page_source)
        d.find_element(By.ID, "subject").clear()
        d.find_element(By.ID, "subject").send_keys(subject)
        Select(d.find_element(By.ID, "role")).select_by_value(role)
        if patient:
            d.find_element(By.ID, "patient").send_keys(patient)
        d.find_element(By.ID, "sign-in-button").click()
        wait(d, EC.presence_of_element_located((By.ID, "who")))

    def test_staff_flow_search_open_download_audit(self):
        dl = tempfile.mkdtemp(prefix="docstore-dl-")
        d = browser(downloads=dl)
        try:
            self.sign_in(d, "ana", "staff")
            self.assertTrue(d.current_url.endswith("/busca"))
            q = d.find_element(By.ID, "q")
            q.send_keys('"hemoglobina glicada"')
            d.find_element(By.ID, "search-button").click()
            wait(d, EC.presence_of_element_located((By.ID, "total")))
            hits = d.find_elements(By.CSS_SELECTOR, "li.hit")
            self.assertGreaterEqual(len(hits), 3)
            marks = [m.text.lower() for m in d.find_elements(By.CSS_SELECTOR, ".snippet mark")]
            self.assertIn("hemoglobina", marks)
            self.assertIn("glicada", marks)
            # Every thumbnail loaded (a broken image has naturalWidth 0).
            wait(d, lambda d: d.execute_script(
                "return [...document.querySelectorAll('img.thumb')].every(i => i.complete && i.naturalWidth > 0)"))
            self.shot(d, "search")
            # The hit counts by kind.
            self.assertRegex(d.find_element(By.ID, "total").text, r"laudo: \d+")
            d.find_element(By.CSS_SELECTOR, 'a.doc[href="/documentos/%s"]' % self.doc).click()
            wait(d, EC.presence_of_element_located((By.ID, "document-id")))
            self.assertEqual(d.find_element(By.ID, "document-id").text, self.doc)
            open_href = d.find_element(By.CSS_SELECTOR, "a.open").get_attribute("href")
            self.assertTrue(open_href.endswith("/v1/documents/%s/versions/1" % self.doc))
            d.find_element(By.CSS_SELECTOR, "a.download").click()
            got = downloaded(dl)
            self.assertEqual(got, self.report, "the downloaded bytes are the stored version")
            self.shot(d, "document")
            # The audit trail shows this view (and the download), by ana.
            d.refresh()
            audit = d.find_element(By.ID, "audit").text
            self.assertIn("staff:ana", audit)
            self.assertIn("conteúdo aberto ou baixado", audit)
            self.assertIn("página do documento vista", audit)
            self.assertNotIn("key_unwrap", audit, "the library's inner steps are not listed")
            no_dialog(self, d)
        finally:
            d.quit()

    def test_xss_payloads_render_as_text(self):
        d = browser()
        try:
            self.sign_in(d, "ana", "staff")
            d.get(self.s.base + "/busca?" + urllib.parse.urlencode(
                {"q": "creatinina", "patient": XSS_IMG, "exam": XSS_SCRIPT}))
            no_dialog(self, d)
            self.assertEqual(d.find_element(By.ID, "patient").get_attribute("value"), XSS_IMG)
            self.assertEqual(d.find_element(By.ID, "exam").get_attribute("value"), XSS_SCRIPT)
            d.get(self.s.base + "/busca?q=creatinina")
            no_dialog(self, d)
            snippet = d.find_element(By.CSS_SELECTOR, ".snippet").text
            self.assertIn("<script>alert(1)</script>", snippet)
            self.assertIn("onerror=alert(1)>", snippet)
            self.assertEqual(d.find_elements(By.CSS_SELECTOR, "main script, img[src='x']"), [])
            d.get(self.s.base + "/documentos/" + self.xss)
            no_dialog(self, d)
            # A patient id with quotes and angle brackets: the sign-in refuses it, echoing nothing.
            p = browser()
            try:
                p.get(self.s.base + "/entrar")
                p.find_element(By.ID, "subject").send_keys("x")
                Select(p.find_element(By.ID, "role")).select_by_value("patient")
                p.find_element(By.ID, "patient").send_keys(XSS_IMG + XSS_SCRIPT)
                p.find_element(By.ID, "sign-in-button").click()
                no_dialog(self, p)
                self.assertNotIn("onerror", p.page_source)
                self.assertEqual(p.find_elements(By.ID, "who"), [])
            finally:
                p.quit()
            status, headers, body = self.s.http.request("GET", "/entrar")
            self.assertEqual(status, 200)
            # The headers docs/pages.md documents are the ones served, word for word.
            for name, value in documented_page_headers().items():
                self.assertEqual(headers.get(name.lower()), value, name)
            csp = headers["content-security-policy"]
            self.assertIn("script-src 'self'", csp)
            self.assertIn("frame-ancestors 'none'", csp)
            self.assertNotIn("unsafe-inline", csp)
            self.assertEqual(headers["x-content-type-options"], "nosniff")
            self.assertEqual(headers["referrer-policy"], "no-referrer")
            self.assertNotIn(b"<script>", body.split(b"</head>")[1], "no inline script on the page")
            # A stored HTML document is never shown inline on this origin.
            html = self.s.upload("pac-9", "exm-9", b"<html><script>alert(1)</script></html>", "text/html")
            status, headers, _ = self.s.api("GET", "/v1/documents/" + html)
            self.assertEqual(status, 200)
            self.assertTrue(headers["content-disposition"].startswith("attachment"))
        finally:
            d.quit()

    def test_csrf_and_sign_out(self):
        d = browser()
        try:
            self.sign_in(d, "ana", "staff")
            sid = cookie(d)
            self.assertIsNotNone(sid)
            c = d.get_cookie("docstore_session")
            self.assertTrue(c["httpOnly"])
            self.assertEqual(c.get("sameSite"), "Lax")
            jar = {"Cookie": "docstore_session=" + sid}
            # A form post without the token, and one with a wrong token, are refused.
            for body in ("version=1&label=x", "version=1&label=x&csrf=forged"):
                status, _, _ = self.s.http.request(
                    "POST", "/documentos/%s/links" % self.doc, body,
                    dict(jar, **{"Content-Type": "application/x-www-form-urlencoded"}))
                self.assertEqual(status, 403, body)
            # So is a script's unsafe API request from the session without its token.
            status, _, _ = self.s.http.request(
                "POST", "/v1/documents?patient=pac-1&exam=exm-1", b"%PDF-1.4 x",
                dict(jar, **{"Content-Type": "application/pdf"}))
            self.assertEqual(status, 403)
            # Sign-in rotated the cookie: the pre-sign-in session id is not the signed-in one.
            d2 = browser()
            try:
                d2.get(self.s.base + "/entrar")
                before = cookie(d2)
                self.sign_in(d2, "bia", "staff")
                self.assertNotEqual(before, cookie(d2))
            finally:
                d2.quit()
            status, _, _ = self.s.http.request("GET", "/busca", headers=jar)
            self.assertEqual(status, 200)
            d.find_element(By.ID, "sign-out").click()
            wait(d, EC.presence_of_element_located((By.ID, "sign-in")))
            # The old cookie opens nothing now: pages send to sign-in, the API answers 401.
            status, headers, _ = self.s.http.request("GET", "/busca", headers=jar)
            self.assertIn(status, (302, 303, 307))
            self.assertEqual(headers["location"], "/entrar")
            status, _, _ = self.s.http.request("GET", "/v1/documents/" + self.doc, headers=jar)
            self.assertEqual(status, 401)
        finally:
            d.quit()

    def test_patient_flow_share_and_release(self):
        dl = tempfile.mkdtemp(prefix="docstore-dl-")
        d = browser(downloads=dl)
        try:
            self.sign_in(d, "u-pac1", "patient", "pac-1")
            self.assertTrue(d.current_url.endswith("/meus-exames"))
            listed = {e.get_attribute("data-document") for e in d.find_elements(By.CSS_SELECTOR, "li.card")}
            self.assertEqual(listed, {self.doc, self.xss}, "only their own released exams")
            no_dialog(self, d)
            self.shot(d, "patient")
            card = d.find_element(By.CSS_SELECTOR, 'li.card[data-document="%s"]' % self.doc)
            card.find_element(By.CSS_SELECTOR, "a.download").click()
            self.assertEqual(downloaded(dl), self.report)
            card = d.find_element(By.CSS_SELECTOR, 'li.card[data-document="%s"]' % self.doc)
            card.find_element(By.CSS_SELECTOR, "a.doc").click()
            wait(d, EC.presence_of_element_located((By.ID, "share-form")))
            d.find_element(By.ID, "label").send_keys("Dr. Souza")
            d.find_element(By.ID, "share-button").click()
            url = wait(d, EC.presence_of_element_located((By.ID, "share-url"))).get_attribute("value")
            self.assertIn("/v1/links/", url)
            path = urllib.parse.urlparse(url).path
            # A fresh browser context, signed in as nobody, opens it.
            fresh_dl = tempfile.mkdtemp(prefix="docstore-dl-")
            f = browser(downloads=fresh_dl)
            try:
                f.get(url)
                self.assertEqual(downloaded(fresh_dl), self.report)
            finally:
                f.quit()
            status, _, body = self.s.http.request("GET", path)
            self.assertEqual((status, body), (200, self.report))
            # Revoked, it stops working.
            d.get(self.s.base + "/documentos/" + self.doc)
            button = d.find_element(By.CSS_SELECTOR, "button.revoke")
            button.click()
            # The answer redirects to this same page: wait for the old one to go,
            # or the check below races the revocation.
            wait(d, EC.staleness_of(button))
            wait(d, EC.presence_of_element_located((By.ID, "document-id")))
            status, _, _ = self.s.http.request("GET", path)
            self.assertEqual(status, 404)
            # Another patient's document reads as missing.
            d.get(self.s.base + "/documentos/" + self.other)
            self.assertEqual(d.find_element(By.ID, "error-title").text, "Não encontrado")
            self.assertIn("não usar em produção", d.page_source, "the error page is marked too")
            status, _, _ = self.s.http.request(
                "GET", "/documentos/" + self.other, headers={"Cookie": "docstore_session=" + cookie(d)})
            self.assertEqual(status, 404)
            # The unreleased exam appears once released.
            d.get(self.s.base + "/meus-exames")
            self.assertEqual(d.find_elements(By.CSS_SELECTOR, 'li.card[data-document="%s"]' % self.unreleased), [])
            d.get(self.s.base + "/documentos/" + self.unreleased)
            self.assertEqual(d.find_element(By.ID, "error-title").text, "Não encontrado")
            self.s.release("exm-4")
            d.get(self.s.base + "/meus-exames")
            self.assertEqual(len(d.find_elements(By.CSS_SELECTOR, 'li.card[data-document="%s"]' % self.unreleased)), 1)
            # Who accessed: the patient's own reads and the link's use are there.
            d.get(self.s.base + "/meus-exames/acessos")
            rows = d.find_element(By.ID, "accesses").text
            self.assertIn("patient:u-pac1", rows)
            self.assertIn("link:", rows)
            self.assertIn("aberto por um link compartilhado", rows)
        finally:
            d.quit()

    def test_phone_width(self):
        d = browser(width=390)
        try:
            self.sign_in(d, "u-pac1", "patient", "pac-1")
            wide = d.execute_script("return document.documentElement.scrollWidth")
            self.assertLessEqual(wide, 392, "no sideways scrolling at phone width")
            self.shot(d, "patient")
            d.get(self.s.base + "/documentos/" + self.doc)
            self.shot(d, "document")
            s = browser(width=390)
            try:
                self.sign_in(s, "ana", "staff")
                s.get(self.s.base + "/busca?" + urllib.parse.urlencode({"q": '"hemoglobina glicada"'}))
                self.assertLessEqual(s.execute_script("return document.documentElement.scrollWidth"), 392)
                self.shot(s, "search")
            finally:
                s.quit()
        finally:
            d.quit()

    def test_keyboard_reaches_the_content_and_every_control_has_a_label(self):
        from selenium.webdriver.common.keys import Keys
        d = browser()
        try:
            self.sign_in(d, "ana", "staff")
            from selenium.webdriver.common.action_chains import ActionChains
            # The first Tab on a page reaches the skip link, and Enter on it the content.
            d.get(self.s.base + "/documentos/" + self.doc)
            ActionChains(d).send_keys(Keys.TAB).perform()
            active = d.switch_to.active_element
            self.assertEqual(active.get_attribute("class"), "skip")
            ActionChains(d).send_keys(Keys.ENTER).perform()
            self.assertEqual(d.switch_to.active_element.get_attribute("id"), "main")
            # Focus is visible: the focused control draws an outline.
            ActionChains(d).send_keys(Keys.TAB).perform()
            outline = d.execute_script("return getComputedStyle(document.activeElement).outlineStyle")
            self.assertNotEqual(outline, "none")
            for path in ("/busca?q=glicemia", "/enviar", "/documentos/" + self.doc):
                d.get(self.s.base + path)
                unlabelled = d.execute_script("""
                    return [...document.querySelectorAll('input:not([type=hidden]), select')]
                      .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
                      .map(e => e.name || e.id)""")
                self.assertEqual(unlabelled, [], path)
                self.assertEqual(d.find_element(By.TAG_NAME, "html").get_attribute("lang"), "pt-BR")
        finally:
            d.quit()

    def test_upload_three_files_then_searchable(self):
        d = browser()
        try:
            self.sign_in(d, "ana", "staff")
            d.get(self.s.base + "/enviar")
            folder = tempfile.mkdtemp(prefix="docstore-up-")
            words = ["ornitorrinco", "quasimodo", "zabumba"]
            paths = []
            for w in words:
                p = os.path.join(folder, w + ".pdf")
                with open(p, "wb") as fh:
                    fh.write(pdf(["Laudo enviado pela pagina", "Palavra unica: " + w]))
                paths.append(p)
            d.find_element(By.ID, "up-patient").send_keys("pac-7")
            d.find_element(By.ID, "up-exam").send_keys("exm-7")
            d.find_element(By.ID, "up-files").send_keys("\n".join(paths))
            d.find_element(By.ID, "upload-button").click()
            wait(d, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#uploads li.done")) == 3, 30)
            self.assertEqual(d.find_elements(By.CSS_SELECTOR, "#uploads li.failed"), [])
            uploaded = time.time()
            for w in words:
                while self.s.search_total(w) < 1:
                    self.assertLess(time.time() - uploaded, 5.0, "%s not searchable within 5 s" % w)
                    time.sleep(0.1)
        finally:
            d.quit()


class OidcSignIn(unittest.TestCase):
    """The pages' sign-in against a real OIDC provider (oidc-provider-mock, from PyPI): the
    authorization-code flow with PKCE, state and nonce; the ID token's claims map to the role."""

    @classmethod
    def setUpClass(cls):
        port = free_port()
        cls.issuer = "http://127.0.0.1:%d" % port
        users = [
            {"sub": "ana", "cognito:groups": ["staff"]},
            {"sub": "u-pac1", "cognito:groups": ["patient"], "patient_id": "pac-1"},
            {"sub": "nobody", "cognito:groups": ["visitors"]},
        ]
        args = [sys.executable, "-m", "oidc_provider_mock", "-p", str(port), "--require-nonce", "true"]
        for u in users:
            args += ["--user-claims", json.dumps(u)]
        cls.provider_log = tempfile.TemporaryFile()
        cls.provider = subprocess.Popen(args, stdout=cls.provider_log, stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while True:
            try:
                status, _, _ = Http("127.0.0.1:%d" % port).request("GET", "/.well-known/openid-configuration")
                if status == 200:
                    break
            except OSError:
                pass
            if time.time() > deadline or cls.provider.poll() is not None:
                cls.provider_log.seek(0)
                raise RuntimeError("the OIDC provider did not start: %s" % cls.provider_log.read().decode())
            time.sleep(0.1)
        listen = "127.0.0.1:%d" % free_port()
        cls.s = Service_(listen, [
            "--oidc-issuer", cls.issuer, "--oidc-audience", "docstore",
            "--oidc-client-id", "docstore-pages", "--oidc-client-secret", "pages-secret",
            "--oidc-redirect-url", "http://%s/entrar/retorno" % listen,
        ])

    @classmethod
    def tearDownClass(cls):
        cls.s.stop()
        cls.provider.terminate()
        cls.provider.wait(timeout=20)
        cls.provider_log.close()

    def sign_in(self, d, sub):
        d.get(self.s.base + "/entrar")
        self.assertNotIn("não usar em produção", d.page_source, "no development sign-in with a provider")
        self.assertEqual(d.find_elements(By.ID, "subject"), [])
        d.find_element(By.ID, "sign-in-oidc").click()
        wait(d, EC.url_contains(self.issuer))
        self.assertIn("code_challenge=", d.current_url)
        self.assertIn("code_challenge_method=S256", d.current_url)
        self.assertIn("nonce=", d.current_url)
        d.find_element(By.CSS_SELECTOR, 'button[name="sub"][value="%s"]' % sub).click()

    def test_staff_and_patient_sign_in_through_the_provider(self):
        d = browser()
        try:
            d.get(self.s.base + "/entrar")
            before = cookie(d)
            self.sign_in(d, "ana")
            wait(d, EC.presence_of_element_located((By.ID, "who")))
            self.assertEqual(d.find_element(By.ID, "who").text, "ana (staff)")
            self.assertTrue(d.current_url.endswith("/busca"))
            self.assertNotEqual(cookie(d), before, "a new session id at sign-in")
        finally:
            d.quit()
        d = browser()
        try:
            self.sign_in(d, "u-pac1")
            wait(d, EC.presence_of_element_located((By.ID, "who")))
            self.assertTrue(d.current_url.endswith("/meus-exames"))
        finally:
            d.quit()

    def test_a_replayed_or_forged_answer_and_a_user_without_a_role_are_refused(self):
        d = browser()
        try:
            self.sign_in(d, "ana")
            wait(d, EC.presence_of_element_located((By.ID, "who")))
            d.find_element(By.ID, "sign-out").click()
            wait(d, EC.presence_of_element_located((By.ID, "sign-in-oidc")))
            # Start a sign-in, but answer with a forged state.
            d.find_element(By.ID, "sign-in-oidc").click()
            wait(d, EC.url_contains(self.issuer))
            d.get(self.s.base + "/entrar/retorno?code=forged&state=forged")
            self.assertEqual(d.find_elements(By.ID, "who"), [])
            self.assertIn("HTTP 401", d.page_source)
            # An answer with no sign-in in progress in this browser's session is refused.
            d.get(self.s.base + "/entrar")
            d.find_element(By.ID, "sign-in-oidc").click()
            wait(d, EC.url_contains(self.issuer))
            d.find_element(By.CSS_SELECTOR, 'button[name="sub"][value="ana"]').click()
            wait(d, EC.presence_of_element_located((By.ID, "who")))
            d.delete_all_cookies()
            status, _, _ = self.s.http.request("GET", "/entrar/retorno?code=x&state=y")
            self.assertEqual(status, 401)
            # A provider user with no docstore role gets no session.
            d.get(self.s.base + "/entrar")
            d.find_element(By.ID, "sign-in-oidc").click()
            wait(d, EC.url_contains(self.issuer))
            d.find_element(By.CSS_SELECTOR, 'button[name="sub"][value="nobody"]').click()
            wait(d, EC.url_contains("/entrar/retorno"))
            self.assertIn("HTTP 403", d.page_source)
            d.get(self.s.base + "/busca")
            self.assertTrue(d.current_url.endswith("/entrar"))
        finally:
            d.quit()


PUBLISH = r"""
import sys
from confluent_kafka import Producer
broker, topic, key, value = sys.argv[1:5]
p = Producer({"bootstrap.servers": broker})
p.produce(topic, key=key.encode(), value=value.encode())
assert p.flush(15) == 0, "not delivered"
"""


class ReleaseOnKafka(unittest.TestCase):
    """An exam's result appears on its patient's page when the exam service's
    `exam.result.ready` arrives on the real Kafka broker (scripts/services.sh), not before."""

    @classmethod
    def setUpClass(cls):
        cls.broker = os.environ.get("DOCSTORE_TEST_KAFKA")
        if not cls.broker:
            if os.environ.get("DOCSTORE_REQUIRE_SERVICES"):
                raise AssertionError("DOCSTORE_TEST_KAFKA not set but services are required")
            raise unittest.SkipTest("DOCSTORE_TEST_KAFKA not set")
        cls.python = os.environ["DOCSTORE_TEST_PYTHON"]
        cls.prefix = "ui%d." % os.getpid()
        cls.s = Service_(args=["--bus", "kafka://%s?prefix=%s" % (cls.broker, cls.prefix)])
        cls.s.staff_token = cls.s.token("staff", "seed")

    @classmethod
    def tearDownClass(cls):
        cls.s.stop()

    def publish(self, kind, event_id, data):
        event = {"specversion": "1.0", "id": event_id, "source": "urn:clinic:exams", "type": kind,
                 "datacontenttype": "application/json", "data": data}
        subprocess.run([self.python, "-c", PUBLISH, self.broker, self.prefix + kind, data["exam_id"],
                        json.dumps(event)], check=True, timeout=60)

    def test_the_result_appears_when_the_exam_service_says_it_is_ready(self):
        doc = self.s.upload("pac-k", "exm-k", pdf(["Hemoglobina glicada 5,0 %"]))
        # Wait until the service's consumer is assigned: an exam.created for another exam lands.
        deadline = time.time() + 90
        n = 0
        while self.s.api("GET", "/v1/exams/exm-warm")[0] != 200:
            self.assertLess(time.time(), deadline, "the exam consumer never started")
            n += 1
            self.publish("exam.created", "warm-%d" % n, {"exam_id": "exm-warm", "patient_id": "pac-w"})
            time.sleep(0.5)
        d = browser()
        try:
            d.get(self.s.base + "/entrar")
            d.find_element(By.ID, "subject").clear()
            d.find_element(By.ID, "subject").send_keys("u-k")
            Select(d.find_element(By.ID, "role")).select_by_value("patient")
            d.find_element(By.ID, "patient").send_keys("pac-k")
            d.find_element(By.ID, "sign-in-button").click()
            wait(d, EC.presence_of_element_located((By.ID, "who")))
            card = 'li.card[data-document="%s"]' % doc
            self.assertEqual(d.find_elements(By.CSS_SELECTOR, card), [], "listed before the release")
            self.publish("exam.result.ready", "ready-k", {"exam_id": "exm-k", "patient_id": "pac-k"})
            published = time.time()
            while not d.find_elements(By.CSS_SELECTOR, card):
                self.assertLess(time.time() - published, 10, "never listed after exam.result.ready")
                time.sleep(0.2)
                d.refresh()
        finally:
            d.quit()


if __name__ == "__main__":
    unittest.main()
