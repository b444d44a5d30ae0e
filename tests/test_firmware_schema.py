"""docs/program.schema.json: up to date, a valid 2020-12 schema, agrees with the validator."""

import json

import jsonschema
import pytest
from hypothesis import given, settings

from copperline.firmware import schema
from tests.support import valid_programs

# Broken programs only the whole-program validator can catch (labels, table sizes, ...).
WHOLE_PROGRAM_ONLY = {"duplicate_key", "duplicate_label_disagree", "duplicate_label_markers",
                      "label_index_outside", "missing_label", "only_markers", "too_many_loops",
                      "too_many_timelines"}


@pytest.fixture(scope="module")
def validator(repo_root):
    doc = json.loads((repo_root / "docs" / "program.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(doc)
    return jsonschema.Draft202012Validator(doc)


def test_committed_schema_is_generated(repo_root):
    committed = (repo_root / "docs" / "program.schema.json").read_text()
    assert committed == schema.render(), (
        "docs/program.schema.json is stale: run "
        "`.venv/bin/python -m copperline.firmware.schema > docs/program.schema.json`")


def test_every_example_validates(validator, examples_dir):
    paths = sorted(examples_dir.glob("*.json"))
    assert paths
    for path in paths:
        errors = [e.message for e in validator.iter_errors(json.loads(path.read_text()))]
        assert errors == [], path


def test_broken_programs_are_rejected_by_the_schema(validator, repo_root):
    for path in sorted((repo_root / "tests" / "broken").glob("*.json")):
        if path.stem == "syntax_error":
            continue
        valid = validator.is_valid(json.loads(path.read_text()))
        assert valid == (path.stem in WHOLE_PROGRAM_ONLY), path.name


def test_bool_is_not_an_integer_for_the_schema(validator):
    assert not validator.is_valid({"version": 1, "program": [{"op": "WAIT", "us": True}]})


@settings(max_examples=100, deadline=None)
@given(valid_programs())
def test_every_valid_program_validates(doc):
    # jsonschema validators are cheap to build; keep the test independent of fixtures.
    v = jsonschema.Draft202012Validator(schema.program_schema())
    assert [e.message for e in v.iter_errors(doc)] == []
