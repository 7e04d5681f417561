"""etc/servicegroup.conf.sample must match the options in servicegroup/conf.py.

The sample is what operators copy; a stale one documents settings that do
not exist or hides ones that do, so the build fails until it is regenerated.
"""

from __future__ import annotations

from pathlib import Path

from oslo_config import generator

REPO = Path(__file__).resolve().parents[2]
GENERATOR_CONFIG = REPO / "etc" / "servicegroup-config-generator.conf"
SAMPLE = REPO / "etc" / "servicegroup.conf.sample"
REGENERATE = "oslo-config-generator --config-file etc/servicegroup-config-generator.conf"


def test_sample_config_is_up_to_date(tmp_path: Path) -> None:
    fresh = tmp_path / "servicegroup.conf.sample"
    generator.main(["--config-file", str(GENERATOR_CONFIG), "--output-file", str(fresh)])
    assert fresh.read_text() == SAMPLE.read_text(), (
        f"{SAMPLE.relative_to(REPO)} is stale; regenerate it from the repository root with:\n"
        f"    {REGENERATE}"
    )


def test_sample_config_does_not_depend_on_the_machine() -> None:
    # state_dir's real default is under the user's home; the sample must show
    # the sample_default, or every developer would regenerate a different file.
    text = SAMPLE.read_text()
    assert "#state_dir = ~/.local/state/servicegroup" in text
    assert str(Path.home()) not in text
