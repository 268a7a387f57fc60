"""coderd's validators, one implementation for the jobs and the fake, held to a real coderd's answers.

`../shared/coder-api/vectors/validation.json` records what a real coderd (the commit BEHAVIOR.md
describes) said to each password, email and username. Every vector must come out the same here,
both from jobs/validation.py and from the fake's POST /users/first (which uses it).
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from jobs import validation

VECTORS = Path(__file__).resolve().parents[2] / "shared" / "coder-api" / "vectors" / "validation.json"
pytestmark = pytest.mark.skipif(not VECTORS.is_file(), reason=f"coderd's answers are not at {VECTORS}")

CHECKS = {"password": validation.password_problem, "email": validation.email_problem,
          "username": validation.username_problem}


def vectors() -> list[dict]:
    return json.loads(VECTORS.read_text())["vectors"] if VECTORS.is_file() else []


def test_the_file_has_every_kind_of_vector_accepted_and_refused():
    seen = {(v["field"], v["coderd_accepts"]) for v in vectors()}
    assert seen == {(f, ok) for f in CHECKS for ok in (True, False)}


def test_every_vector_gets_coderds_answer_from_the_local_rules():
    disagree = [(v["field"], v["value"], v["coderd_accepts"]) for v in vectors()
                if (CHECKS[v["field"]](v["value"]) is None) != v["coderd_accepts"]]
    assert disagree == []


def test_the_examples_the_issue_names():
    assert validation.password_problem("cjtrmqvbvczw") is None  # set with `coder reset-password`, logs in
    for email in ("ü@ex.com", "a@bücher.de", '"quoted"@ex.com', "x" * 65 + "@ex.com"):
        assert validation.email_problem(email) is None, email
    for username in ("New", "Create", "NEW"):
        assert validation.username_problem(username) is None, username
    assert validation.username_problem("create") is not None


def test_a_problem_never_contains_the_value():
    for v in vectors():
        problem = CHECKS[v["field"]](v["value"])
        assert problem is None or v["value"] not in problem


def test_a_long_hostile_email_is_judged_quickly():
    # Python's regex engine backtracks; the email pattern is written so that it cannot explode.
    assert validation.email_problem('"' + " \t" * 5000) is not None
    assert validation.email_problem("a" * 5000 + "@" + "b." * 3000) is not None


@pytest.mark.no_conformance  # refused values are off-spec requests on purpose (an email that is not one)
def test_the_fakes_first_user_endpoint_answers_every_vector_like_coderd(coderd):
    base = {"email": "vector@example.com", "username": "vector", "password": "Vector-Passw0rd-9x!", "trial": False}
    wrong = []
    with httpx.Client(base_url=coderd.url + "/api/v2", timeout=10) as http:
        for v in vectors():
            status = http.post("/users/first", json={**base, v["field"]: v["value"]}).status_code
            if status == 201:
                coderd.reset_database()
            # 400 is the validators' answer; `prebuilds` passes them and then collides with the
            # system user (500, BEHAVIOR.md §2), as the vector's 409 on POST /users did.
            if (status != 400) != v["coderd_accepts"]:
                wrong.append((v["field"], v["value"], status))
    assert wrong == []
