"""Mixed clinic traffic against `docstore serve` (scripts/load-mixed.sh prepares the data).

Patients list their results, open them (whole and by range, as a PDF viewer does), fetch
thumbnails, search their own documents, and probe another patient's document (which must read
as missing). Staff upload results, add versions with If-Match, list exams, search, and make and
open download links. Any unexpected status is a failure.
"""

import json
import os
import random

from locust import HttpUser, between, task

SEED = json.load(open(os.environ["DOCSTORE_LOAD_SEED"]))
PDF = open(os.environ["DOCSTORE_LOAD_PDF"], "rb").read()


def expect(resp, *codes):
    if resp.status_code in codes:
        resp.success()
    else:
        resp.failure(f"status {resp.status_code}, wanted {codes}: {resp.text[:200]}")


class Patient(HttpUser):
    weight = 4
    wait_time = between(0.05, 0.3)

    def on_start(self):
        self.me = random.choice(SEED["patients"])
        self.other = random.choice([p for p in SEED["patients"] if p is not self.me])
        self.auth = {"Authorization": f"Bearer {self.me['token']}"}

    @task(3)
    def list_mine(self):
        with self.client.get(f"/v1/patients/{self.me['patient']}/documents?limit=20",
                             headers=self.auth, name="patient: list own", catch_response=True) as r:
            expect(r, 200)

    @task(4)
    def open_result(self):
        doc = random.choice(self.me["documents"])
        with self.client.get(f"/v1/documents/{doc}", headers=self.auth,
                             name="patient: GET result", catch_response=True) as r:
            expect(r, 200)
        with self.client.get(f"/v1/documents/{doc}", headers={**self.auth, "Range": "bytes=0-1023"},
                             name="patient: GET range", catch_response=True) as r:
            expect(r, 206)

    @task(2)
    def thumbnail(self):
        doc = random.choice(self.me["documents"])
        with self.client.get(f"/v1/documents/{doc}/versions/1/renditions/thumbnail", headers=self.auth,
                             name="patient: thumbnail", catch_response=True) as r:
            expect(r, 200)

    @task(1)
    def search_mine(self):
        with self.client.get("/v1/search?q=hemograma", headers=self.auth,
                             name="patient: search", catch_response=True) as r:
            expect(r, 200)
            if r.ok and any(h["patient_id"] != self.me["patient"] for h in r.json().get("hits", [])):
                r.failure("search returned another patient's document")

    @task(1)
    def probe_another_patient(self):
        doc = random.choice(self.other["documents"])
        with self.client.get(f"/v1/documents/{doc}", headers=self.auth,
                             name="patient: another's result (404)", catch_response=True) as r:
            expect(r, 404)


class Staff(HttpUser):
    weight = 1
    wait_time = between(0.1, 0.5)

    def on_start(self):
        self.auth = {"Authorization": f"Bearer {SEED['staff']}"}

    @task(2)
    def upload_and_version(self):
        p = random.choice(SEED["patients"])
        with self.client.post(f"/v1/documents?patient={p['patient']}&exam={p['exam']}&kind=report",
                              data=PDF, headers={**self.auth, "Content-Type": "application/pdf"},
                              name="staff: upload", catch_response=True) as r:
            expect(r, 201)
            if r.status_code != 201:
                return
            doc, etag = r.json()["document_id"], r.headers["ETag"]
        with self.client.post(f"/v1/documents/{doc}/versions", data=PDF,
                              headers={**self.auth, "Content-Type": "application/pdf", "If-Match": etag},
                              name="staff: add version (If-Match)", catch_response=True) as r:
            expect(r, 201)

    @task(2)
    def list_exam(self):
        p = random.choice(SEED["patients"])
        with self.client.get(f"/v1/exams/{p['exam']}/documents?limit=20", headers=self.auth,
                             name="staff: list exam", catch_response=True) as r:
            expect(r, 200)

    @task(2)
    def search(self):
        with self.client.get("/v1/search?q=hemograma&per_page=10", headers=self.auth,
                             name="staff: search", catch_response=True) as r:
            expect(r, 200)

    @task(1)
    def link(self):
        p = random.choice(SEED["patients"])
        doc = random.choice(p["documents"])
        with self.client.post(f"/v1/documents/{doc}/versions/1/links", json={"max_uses": 2},
                              headers=self.auth, name="staff: make link", catch_response=True) as r:
            expect(r, 201)
            if r.status_code != 201:
                return
            url = r.json()["url"]
        with self.client.get(url, name="link: open", catch_response=True) as r:
            expect(r, 200)
