"""docs/isa.md is generated from isa.py and says what isa.py says."""

from copperline.firmware import isa, isadoc


def test_committed_isa_md_is_generated(repo_root):
    committed = (repo_root / "docs" / "isa.md").read_text()
    assert committed == isadoc.render(), (
        "docs/isa.md is stale: run `.venv/bin/python -m copperline.firmware.isadoc > docs/isa.md`")


def test_isa_md_covers_every_op_register_and_rule():
    text = isadoc.render()
    for spec in isa.OPS:
        assert f"| `{spec.name}` | {int(spec.opcode)} " in text
        assert spec.cycles in text
    for f in isa.REGISTER_FIELDS:
        assert f"| `{f.name}` | {f.index} | {f.width} |" in text
    assert isa.EXECUTION_RULES.strip() in text
    assert f"| `VSYNC_LATENCY` | {isa.VSYNC_LATENCY} |" in text
    assert "`[24:13]` target" in text     # LOOP's bit layout
