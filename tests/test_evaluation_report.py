"""evaluation.report: JSON clean-up and the Markdown / HTML renderings of one block list."""

import base64
import json

import numpy as np

from specsr_keras.evaluation.report import data_consistency_blocks, json_ready, render_html, render_markdown

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")


def test_json_ready_turns_nan_and_numpy_into_plain_json():
    value = {"a": np.float64("nan"), "b": [np.int64(3), float("inf")], "c": np.array([0.5])}
    assert json.loads(json.dumps(json_ready(value))) == {"a": None, "b": [3, None], "c": [0.5]}


def test_markdown_links_and_html_embeds_the_same_figure(tmp_path):
    (tmp_path / "figures").mkdir()
    figure = tmp_path / "figures" / "f.png"
    figure.write_bytes(PNG)
    blocks = [("heading", 2, "Set `x`"), ("text", "a < b"),
              ("table", ["bin", "N"], [["3-5", "12"]]), ("figure", figure, "caption")]
    markdown = render_markdown(blocks, tmp_path)
    assert "## Set `x`" in markdown
    assert "| 3-5 | 12 |" in markdown
    assert "![caption](figures/f.png)" in markdown
    page = render_html(blocks, "m")
    assert "a &lt; b" in page
    assert "<td>12</td>" in page
    assert f"data:image/png;base64,{base64.b64encode(PNG).decode()}" in page


def test_data_consistency_table_shows_the_median_chi2_per_bin_only_where_a_model_reports_it():
    bins = {"10-20": {"n": 40, "reconstruction_chi2_median": 0.93}, ">20": {"n": 12, "reconstruction_chi2_median": 2.5},
            "3-5": {"n": 7}}
    markdown = render_markdown(data_consistency_blocks(bins), None)
    assert "| 10-20 | 40 | 0.93 |" in markdown and "| >20 | 12 | 2.50 |" in markdown
    assert "3-5" not in markdown
    assert data_consistency_blocks({"3-5": {"n": 7}}) == []
