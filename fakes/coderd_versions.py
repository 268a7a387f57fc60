"""The coderd behaviours that differ between the Coder releases coder-jobs supports.

`FakeCoderd(behaviour=OLDEST)` (the default) is coderd at a8c2586 as BEHAVIOR.md describes and a
real server showed (§11); `NEWEST` adds what Coder's current documentation and source show.
Each switch below says where its behaviour comes from (coder/coder paths and pages, in our words;
collected in BEHAVIOR.md §12):

- `setup_token` (§12.1): GET /api/v2/users/authmethods answers `setup_token_required` ("true when the
  first user can only be created with a setup token"), and POST /api/v2/users/first takes
  `setup_token`, "required when AuthMethods.SetupTokenRequired is true; the server prints it at
  startup" (coder.com/docs/reference/api/users: get-authentication-methods, create-initial-user;
  codersdk/users.go `AuthMethods`, `CreateFirstUserRequest`). The fake refuses a missing token
  and a wrong one with 403; the real status code is not documented, so the jobs match on the
  text, not the code (jobs/coder_answers.py `refused_for_setup_token`).
- `parameter_flow` (§12.2): templates carry `use_classic_parameter_flow`. POST .../templates takes it as
  `template_use_classic_parameter_flow` (coder/coder PR #18636, codersdk/organizations.go
  `CreateTemplateRequest`), default false on current releases ("Current default is false",
  coderd/templates_test.go); PATCH /templates/{id} takes `use_classic_parameter_flow` and keeps
  the stored value when it is omitted (coderd/templates.go `patchTemplateMeta`, NilToDefault;
  docs/admin/templates/extending-templates/parameters/compatibility-mode.md). The classic flow
  is deprecated there.
- `upload_race` (§12.3): two identical POST /files at once both pass the dedup lookup and the second
  insert breaks the files table's unique (hash, created_by) constraint,
  `files_hash_created_by_key` (coderd/database/dump.sql): 500. Fixed upstream in mid-2025, after
  which the loser gets the stored file's id (200). `FakeCoderd.race_next_upload()` makes the
  next new upload lose that race.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Behaviour:
    version: str
    setup_token: bool
    parameter_flow: bool
    upload_race: bool


OLDEST = Behaviour("v2.21.0-devel+a8c2586", setup_token=False, parameter_flow=False, upload_race=True)
NEWEST = Behaviour("v2.39.0+fake", setup_token=True, parameter_flow=True, upload_race=False)
BEHAVIOURS = {"oldest": OLDEST, "newest": NEWEST}
