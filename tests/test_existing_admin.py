"""Jobs that log in as an existing admin let coderd judge the credentials, never a local rule.

A real admin could log in with `cjtrmqvbvczw` (set with `coder reset-password`) while the old
local password check refused it, so `recover` exited 2 before sending anything; emails coderd
accepts (`ü@ex.com`, a quoted local part) made even `reap` exit 2. Only bootstrap-admin's create
path applies coderd's rules before sending (tests/test_bootstrap_admin.py).
"""

from __future__ import annotations

import pytest

from tests.conftest import run_job

JOBS = ("recover", "doctor", "reap", "republish-templates", "bootstrap-admin")
CREDENTIALS = [
    pytest.param("cjtrmqvbvczw", "platform-admin@ameide.io", id="password-coderd-accepts"),
    pytest.param("short", "platform-admin@ameide.io", id="password-from-before-any-rule"),
    pytest.param("Existing-Passw0rd-42", "ü@ex.com", id="unicode-email"),
    pytest.param("Existing-Passw0rd-42", '"quoted"@ex.com', id="quoted-email"),
]


@pytest.fixture
def env(templates_env, templates):
    return {**templates_env, "TEMPLATES_DIR": str(templates)}


@pytest.mark.parametrize("password, email", CREDENTIALS)
def test_no_job_refuses_an_existing_admins_credentials_that_coderd_accepts(coderd, env, password, email):
    coderd.create_user("platform-admin", email, password)
    creds = {**env, "CODER_ADMIN_PASSWORD": password, "CODER_ADMIN_EMAIL": email}

    results = {job: run_job(job, env=creds) for job in JOBS}

    assert {job: r.rc for job, r in results.items()} == {job: 0 for job in JOBS}, \
        {job: r.errors() for job, r in results.items() if r.rc}
    assert len(coderd.requests("POST", "/users/login$")) == len(JOBS)
    assert coderd.api_key_count() == 0
