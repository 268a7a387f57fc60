"""The republisher's reading of a template's Terraform: declared variables and external auth ids."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobs.archive import collect_files
from jobs.terraform_files import HCLError, Variable, inspect
from tests.conftest import TEMPLATES_DIR


def facts(files: dict[str, str]):
    return inspect({path: text.encode() for path, text in files.items()})


def test_the_charts_templates_declare_their_variables_and_use_github():
    for name in ("ameide-dev", "ameide-gitops"):
        found = inspect(collect_files(TEMPLATES_DIR / name))
        assert found.external_auth == ("github",)
        declared = {v.name: v.default for v in found.variables}
        assert declared["environment"] == "dev" and declared["use_kubeconfig"] == "false"
        assert "@sha256:" in declared["fallback_image"]  # pinned by digest (issue 12)
        assert "template_name" not in declared  # a module's variable is not the template's


def test_defaults_are_rendered_as_coderd_reports_them():
    tf = '''
# a comment with { braces } and "quotes"
variable "s" { default = "a \\"quoted\\" $${not} %%{interp}" }
variable "n" {
  type    = number
  default = -2.5
}
variable "b" { default = true }
variable "list" {
  default = ["x", "y",
    "z", ]
}
variable "map" {
  default = {
    b = 1
    "a": [true, null]
  }
}
variable "text" {
  default = <<-EOT
    one
      two
  EOT
}
variable "required" {
  type = string
  validation {
    condition     = length(var.required) > 0 && var.required != "}"
    error_message = "must not be empty: ${var.required}"
  }
}
variable "secret" {
  sensitive = true
  default   = null
}
'''
    found = {v.name: v for v in facts({"main.tf": tf}).variables}
    assert {name: v.default for name, v in found.items()} == {
        "s": 'a "quoted" ${not} %{interp}', "n": "-2.5", "b": "true", "list": '["x","y","z"]',
        "map": '{"a":[true,null],"b":1}', "text": "one\n  two\n", "required": None, "secret": None}
    assert found["secret"].sensitive and not found["s"].sensitive


def test_a_null_default_is_no_default_as_terraform_config_inspect_reports_it():
    """tfconfig turns `default = null` into a nil Default, and coderd marks a variable with a nil
    Default required (provisioner/terraform/parse.go): the republisher must give it a value."""
    found = facts({"main.tf": 'variable "a" {\n  default = null\n}\n'})
    assert found.variables == (Variable("a", None),)


def test_external_auth_ids_come_from_every_file_json_too_and_labels_do_not_count():
    found = facts({
        "main.tf": 'module "ws" {\n  source = "./modules/ws"\n}\n',
        "modules/ws/main.tf": 'data "coder_external_auth" "gh" {\n  id = "github"\n}\n'
                              'data "coder_external_auth" "dyn" {\n  id = var.provider\n}\n',
        "modules/other/x.tf.json": '{"data": {"coder_external_auth": {"gl": {"id": "gitlab"}}}}',
    })
    assert found.external_auth == ("gitlab", "github") and found.unknown_external_auth == 1


def test_variables_in_tf_json_at_the_top_level():
    found = facts({"main.tf": "terraform {}\n", "vars.tf.json": '{"variable": {"a": {"default": [1, "x"]}, "b": {}}}'})
    assert found.variables == (Variable("a", '[1,"x"]'), Variable("b", None))


@pytest.mark.parametrize("text, problem", [
    ('variable "x" {\n  default = "unterminated\n}\n', "unterminated string"),
    ('variable "x" {\n  default = 1\n', "unclosed block"),
    ('variable "x" {\n  default = local.y\n}\n', "not a literal"),
    ("}\n", "unexpected '}'"),
    ('x = <<EOT\nno end\n', "unterminated heredoc <<EOT"),
    ('x = 1\n/* no end\n', "unterminated comment"),
    ('x = [1,\n2\ny = 3\n', "unexpected 'y'"),
])
def test_what_it_cannot_read_is_an_error_naming_file_and_line(text, problem):
    with pytest.raises(HCLError, match=problem) as err:
        facts({"main.tf": text})
    assert str(err.value).startswith("main.tf:")


def test_an_unclosed_block_is_reported_on_the_line_it_was_opened_not_at_the_end_of_the_file():
    text = "".join(f"# line {n}\n" for n in range(1, 52)) + 'resource "x" "y" {\n  a = 1\n\n'  # opened on line 52
    with pytest.raises(HCLError) as err:
        facts({"main.tf": text})
    assert str(err.value).startswith('main.tf:52: unclosed block resource "x" "y"'), str(err.value)


def test_every_file_s_problem_is_reported_together_not_only_the_first():
    with pytest.raises(HCLError) as err:
        facts({
            "main.tf": 'variable "a" {\n  default = local.x\n}\nvariable "b" {\n  default = var.a\n}\n',
            "other.tf": 'data "x" "y" {\n',
            "modules/m/main.tf": 'x = "unterminated\n',
            "vars.tf.json": "{",
        })
    assert [p.split(":")[0] for p in err.value.problems] == ["main.tf", "main.tf", "modules/m/main.tf", "other.tf",
                                                            "vars.tf.json"]
    assert "'a'" in err.value.problems[0] and "'b'" in err.value.problems[1]
    assert err.value.problems[3].startswith("other.tf:1: unclosed block")


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list('variable data "{}[]()=,#/*<-EOT\n x1.$%\\:uUf0')), max_size=80))
def test_any_text_is_read_or_refused_with_an_hclerror_never_a_crash(text):
    try:
        facts({"main.tf": text})
    except HCLError:
        pass
