"""benchmarks.served_lora_speed's py-spy summary: shares of samples under the frames it reports."""

from __future__ import annotations

import pytest

from benchmarks.served_lora_speed import profile_shares

LORA = "BaseLinearLayerWithLoRA.apply (vllm/lora/layers/base_linear.py:206)"
RAW = "\n".join([
    f"execute_model (x.py:1);{LORA};_apply_lora_to_output (b.py:231);add_lora_linear (s.py:115) 3",
    f"execute_model (x.py:1);{LORA};mm (torch/_ops.py:1279) 5",
    "execute_model (x.py:1);Sampler.forward (v.py:97) 2",
])


def test_profile_shares_counts_each_sample_under_every_frame_on_its_stack(tmp_path):
    raw = tmp_path / "profile.txt"
    raw.write_text(RAW + "\n")
    shares = profile_shares(raw)
    assert shares["samples"] == 10
    assert shares["share_under"]["model forward"] == 1.0
    assert shares["share_under"]["linear layers with LoRA (base + LoRA)"] == 0.8
    assert shares["share_under"]["LoRA part of those layers"] == 0.3
    assert shares["share_under"]["LoRA products (add_lora_linear)"] == 0.3
    assert shares["share_under"]["building the fused LoRA matrices (served_lora._fused)"] == 0.0
    assert shares["share_under"]["sampler"] == 0.2
    assert shares["innermost_lines"]["mm (torch/_ops.py:1279)"] == 0.5


def test_profile_shares_refuses_an_empty_recording_naming_the_file(tmp_path):
    raw = tmp_path / "empty.txt"
    raw.write_text("")
    with pytest.raises(SystemExit, match="empty.txt"):
        profile_shares(raw)
