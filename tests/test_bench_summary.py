"""benchmarks/summarize.py on fabricated results (fast)."""

import json

from benchmarks.summarize import BEGIN, END, summarize, update_readme

REQUIRED = {"cpu_matmul_gflops", "sr_mfu_cpu", "sr_spectra_per_s_cpu", "infer_rows_per_s", "infer_rss_ratio",
            "sim_galaxies_per_s"}


def _write(path, document):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))


def _results(root):
    roofline = {"peak_gflops_per_s": {"float32": 120.0, "bfloat16": 260.0}, "steps": 5,
                "best_sample": {"variant": "jax_jit", "batch": 256, "spectra_per_s": 60.0, "mfu": 0.2},
                "model": {"denoiser_flops": 7e7, "embedder_flops": 1e7}}
    scores = {"n2_all": {"nmad": 0.2, "coverage_68": 0.5}}
    ddim = {"simulate_galaxies_per_s": 500.0,
            "settings": [{"sampler": "ddim", "steps": 20, "spectra_per_s": 8.0, **scores},
                         {"sampler": "dpm++2m", "steps": 10, "spectra_per_s": 14.0, **scores},
                         {"sampler": "ddim", "steps": 10, "spectra_per_s": 15.0, **scores}]}
    train = {"runs": {"tensorflow": {"tiny": {"samples_per_s": 40.0}}, "jax": {"tiny": {"error": "x"}}}}
    infer = {"runs": [{"rows_per_s": 700.0}, {"rows_per_s": 710.0}], "rss_ratio_largest_to_smallest": 1.03,
             "dask": {"speedup": 1.6}}
    for name, document in (("roofline", roofline), ("ddim_steps", ddim), ("train", train), ("infer", infer)):
        _write(root / f"{name}.json", document)
    return root


def test_summary_keys_and_a_gpu_figure_only_when_measured(tmp_path):
    summary = summarize(_results(tmp_path))
    assert REQUIRED <= set(summary)
    assert summary["sr_spectra_per_s_cpu"] == 15.0 and summary["infer_rows_per_s"] == 710.0
    assert summary["infer_dask_speedup"] == 1.6
    assert summary["train_samples_per_s_tiny_tf"] == 40.0 and "train_samples_per_s_tiny_jax" not in summary
    assert "sr_spectra_per_s_gpu" not in summary
    assert summary["sr_nmad_ddim10"] == summary["sr_nmad_dpm10"] == summary["sr_nmad_ddim20"] == 0.2
    assert not [key for key in summary if "estimate" in key and "gpu" in key]  # no GPU number without a GPU run
    _write(tmp_path / "gpu" / "roofline.json", {"steps": 10, "best_sample": {"spectra_per_s": 5e4}})
    summary = summarize(tmp_path)
    assert summary["sr_spectra_per_s_gpu"] == 5e4


def test_readme_table_is_regenerated_between_the_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{BEGIN}\nold table\n{END}\noutro\n")
    update_readme(readme, summarize(_results(tmp_path)))
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith(f"{END}\noutro\n") and "old table" not in text
    assert "| `cpu_matmul_gflops` | 120.0 GFLOP/s |" in text
