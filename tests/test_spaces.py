"""Search-space validation: each bad file fails with one line naming the file and the fix."""

import re
from pathlib import Path

import pytest

from study.spaces import (
    SpaceError,
    encode_choice,
    load_space,
    parse_direction,
    parse_set_args,
)
from study.trial import trial_config, trial_overrides
from tests.tiny_studies import trial_context

REPO = Path(__file__).resolve().parent.parent
GRID = """
kind: grid
preset: cpu
variants:
  - {name: a, set: {kd.mu: 0.1}}
  - {name: b, set: {kd.mu: 0.2}}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def search(params: str, extra: str = "", selection: str | None = "oracle") -> str:
    """A search on target_mAP unless ``extra`` sets the metric; ``selection`` None leaves the key out."""
    declared = f"selection: {selection}\n" if selection else ""
    return (f"kind: search\n{declared}preset: cpu\ndirections: [synthetic_duke->synthetic_market]\nparams:\n{params}\n"
            f"{extra}")


@pytest.mark.parametrize(
    "text, message",
    [
        (GRID + "fixed: {ula.epz: 1.0}\n", "unknown config key 'ula.epz': did you mean ula.eps?"),
        (search("  ula.epz: {type: uniform, low: 0.1, high: 1}"), "params.ula.epz: unknown config key 'ula.epz'"),
        (search("  kd.mu: {type: choice, values: []}"), "params.kd.mu.values=[] is empty: list at least one value"),
        (search("  kd.mu: {type: uniform, low: 0.9, high: 0.1}"), "low 0.9 > high 0.1: swap them"),
        (search("  loss.center_weight: {type: loguniform, low: 0, high: 0.1}"), "params.loss.center_weight.low=0 is out of range (> 0)"),
        (search("  kd.mu: {type: normal, low: 0, high: 1}"),
         "params.kd.mu.type='normal' is not allowed: use one of choice, grid, uniform, loguniform, int"),
        (search("  kd.mu: {low: 0, high: 1}"), "params.kd.mu.type is missing: give one of choice, grid"),
        (search("  ula.k1: {type: int, low: 1.5, high: 3}"), "params.ula.k1.low=1.5 is not an integer"),
        (search("  kd.mu: {type: uniform, low: 0.1, high: 1.5}"), "kd.mu=1.5 is out of range"),
        (GRID + "directions: [synthetic_duke->market1501]\n", "market1501 is real data: pass --data-root DIR"),
        (GRID + "directions: [synthetic_duke]\n", "is not SRC->TGT"),
        (GRID + "sheduler: {type: asha}\n", "unknown key 'sheduler': did you mean scheduler?"),
        (GRID + "search: {sampler: grid}\n", "search.sampler='grid' is not allowed: use one of tpe, random"),
        (GRID + "scheduler: {type: hyperband}\n", "scheduler.type='hyperband' is not allowed"),
        (GRID + "search: {num_samples: 0}\n", "search.num_samples=0 is out of range (>= 1)"),
        (GRID + "search: {smaple: 1}\n", "unknown key 'search.smaple': did you mean search.sampler?"),
        (GRID + "scheduler: {reduction_factor: 1}\n", "scheduler.reduction_factor=1 is out of range (>= 2)"),
        (GRID + "resources: {cpus_per_trial: 0}\n", "resources.cpus_per_trial=0 is out of range (>= 1)"),
        (GRID.replace("preset: cpu", "preset: laptop"), "preset='laptop' is not allowed: use one of paper, cpu"),
        (GRID + "  - {name: c, set: {kd.mu: 0.1}}\n", "set the same overrides: keep one"),
        (GRID + "  - {name: a, set: {kd.mu: 0.3}}\n", "variant name 'a' is used twice"),
        (GRID.replace("{name: a, set", "{name: a, table: 1, set"), "unknown key 'variants[0].table': valid keys: variants[0].name, variants[0].set"),
        (search("  kd.mu: {type: uniform, low: 0.1, high: 0.9}").replace(
            "directions: [synthetic_duke->synthetic_market]\n", ""), "a search tunes one direction at a time"),
    ],
)
def test_invalid_spaces_fail_with_one_line(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(SpaceError) as info:
        load_space(path)
    text = str(info.value)
    assert message in text
    assert str(path) in text or text.startswith("--")
    assert "\n" not in text


def test_unknown_space_name_suggests_closest():
    with pytest.raises(SpaceError, match="did you mean ablation"):
        load_space("ablaton")


def test_cli_overrides_are_checked_and_named():
    with pytest.raises(SpaceError, match=r"^--set: unknown config key 'adapt.cycels': did you mean adapt.cycles\?"):
        load_space("smoke", overrides={"adapt.cycels": 2})
    with pytest.raises(SpaceError, match=r"^--directions: unknown dataset 'nowhere'"):
        load_space("smoke", directions=["nowhere->synthetic_market"])


def test_data_root_lists_its_folders(tmp_path):
    (tmp_path / "mydata").mkdir()
    assert parse_direction("mydata->market1501", tmp_path, "x") == ("mydata", "market1501")
    with pytest.raises(SpaceError, match="mydata"):
        parse_direction("synthetic_duke->market1501", tmp_path, "x")


def test_set_args_parse_yaml_scalars_and_reject_missing_equals():
    assert parse_set_args(["ula.eps=0.8", "kd.enabled=false", "model.attention=[conv4]", "ula.num_classes="]) == {
        "ula.eps": 0.8, "kd.enabled": False, "model.attention": ["conv4"], "ula.num_classes": None,
    }
    with pytest.raises(SpaceError, match="--set 'ula.eps' is not key=value"):
        parse_set_args(["ula.eps"])


def test_ablation_has_every_paper_row_once_in_both_directions():
    space = load_space("ablation")
    names = [v.name for v in space.variants]
    assert names == [
        "Baseline", "CSAM-ReID", "ULA(700)", "ULA(750)", "ULA(800)", "ULA(850)",
        "ULA(750)+KD(0.1)", "ULA(750)+KD(0.3)", "ULA(750)+KD(0.5)", "ULA(750)+KD(0.7)",
    ]
    assert space.kind == "grid" and space.preset == "cpu"
    trials = space.trials()
    assert len(trials) == 10 * 2
    assert {t["direction"] for t in trials} == {"synthetic_duke->synthetic_market", "synthetic_market->synthetic_duke"}
    tables = {t.id: [row.variant for row in t.rows] for t in space.tables}
    assert tables["table1"] == names[:6] and tables["table2"] == names[3:4] + names[6:]
    assert tables["table3"] == ["ULA(750)+KD(0.5)"]
    references = {row.variant: row.reference for row in space.tables[1].rows}
    assert set(references.values()) == {None, "ULA(750)"}  # Table 2 compares every KD row with no-KD

    def config(name):
        variant = next(v for v in space.variants if v.name == name)
        params = {"study": trial_context(preset=space.preset, fixed=space.fixed),
                  "direction": space.directions[0], "variant": {"set": variant.set}}
        return trial_config(params)

    baseline, csam = config("Baseline"), config("CSAM-ReID")
    assert (baseline.model.attention, baseline.model.bnneck, baseline.adapt.cycles) == ([], False, 0)
    assert (csam.model.attention, csam.model.bnneck, csam.adapt.cycles) == (["conv3", "conv4", "conv5"], True, 0)
    for k in (700, 750, 800, 850):
        ula = config(f"ULA({k})")
        assert round(ula.ula.class_ratio * 751) == k and ula.ula.num_classes is None
        assert ula.ula.enabled and not ula.kd.enabled and ula.adapt.cycles > 0
    for mu in (0.1, 0.3, 0.5, 0.7):
        kd = config(f"ULA(750)+KD({mu})")
        assert kd.kd.enabled and kd.kd.mu == mu and round(kd.ula.class_ratio * 751) == 750
    assert config("ULA(750)").data.source == "synthetic_duke"


def test_hpo_is_an_optuna_search_with_asha():
    space = load_space("hpo")
    assert space.kind == "search" and space.search.sampler == "tpe" and space.scheduler.type == "asha"
    assert set(space.params) == {
        "ula.eps", "ula.min_samples", "ula.similarity_threshold", "loss.center_weight", "kd.mu", "ula.class_ratio",
        "model.attention", "adapt.cycles", "adapt.cycle_epochs", "adapt.lr",
    }
    assert space.search.num_samples >= 40  # enough for TPE to leave its random start-up
    # Pre-training-side settings stay discrete, so the cache serves repeats.
    assert space.params["model.attention"].type == space.params["loss.center_weight"].type == "choice"
    assert space.search.start_points[0].name == "paper default"
    assert space.search.metrics == ["target_mAP"] and space.search.modes == ["max"]
    assert space.base_config().ula.eps_mode == "fixed"  # otherwise ula.eps would not matter
    assert encode_choice(["conv3", "conv5"]) == "conv3+conv5"


def test_smoke_is_tiny_and_its_trials_share_source_training():
    space = load_space("smoke")
    assert 2 <= len(space.trials()) <= 3
    configs = [
        trial_config({"study": trial_context(preset=space.preset, fixed=space.fixed),
                      "direction": space.directions[0], "variant": {"set": v.set}})
        for v in space.variants
    ]
    assert all(c.source.epochs == 1 and c.adapt.cycles == 1 and c.data.synthetic_ids <= 16 for c in configs)
    stage1 = [(c.data, c.model, c.loss, c.source, c.runtime.seed) for c in configs]
    assert all(s == stage1[0] for s in stage1)


def test_trial_overrides_apply_fixed_then_direction_then_variant_then_sampled():
    params = {
        "study": trial_context(preset="cpu", fixed={"kd.mu": 0.2, "ula.eps": 0.5, "data.source": "x"}),
        "direction": "synthetic_duke->synthetic_market",
        "variant": {"name": "v", "set": {"kd.mu": 0.7}},
        "ula.eps": 0.9,
        "model.attention": "conv4+conv5",
    }
    assert trial_overrides(params) == {
        "kd.mu": 0.7, "ula.eps": 0.9, "data.source": "synthetic_duke", "data.target": "synthetic_market",
        "model.attention": "conv4+conv5",
    }
    config = trial_config(params)
    assert config.model.attention == ["conv4", "conv5"] and config.kd.mu == 0.7 and config.ula.eps == 0.9


TABLES = """tables:
  - id: t
    title: T
    rows:
      - {variant: a, label: A}
"""


@pytest.mark.parametrize(
    "text, message",
    [
        (GRID + TABLES.replace("variant: a,", "variant: nope,"), "variant 'nope' is not in this space's variants"),
        (GRID + TABLES.replace("label: A}", "label: A, reference: zz}"), "refers to 'zz', which is not a variant"),
        (GRID + TABLES + "    claims:\n      - {text: x, variant: a, over: z}\n", "over 'z' is not a variant"),
        (GRID + TABLES.replace("title: T", "title: T\n    metrics: [mAPP]"), "metrics ['mAPP'] must be"),
        (GRID + "seeds: [0, 0]\n", "seeds=[0, 0] repeats a value: list each seed once"),
        (GRID + "seeds: 3\n", "seeds=3 is not a list"),
        (GRID + "seeds: []\n", "seeds=[] is empty"),
    ],
)
def test_bad_tables_and_seeds_are_one_line_errors(tmp_path, text, message):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(SpaceError, match=re.escape(message)):
        load_space(path)


def test_seeds_repeat_every_grid_trial_and_drive_the_config(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(GRID + "seeds: [3, 4]\n")
    space = load_space(path)
    trials = [(t["direction"], t["variant"], t["seed"]) for t in space.trials()]
    assert len(trials) == len(set(trials)) == 2 * 2 * 2  # directions x variants x seeds
    assert {seed for *_, seed in trials} == {3, 4}
    assert load_space(path, seeds=[0, 1, 2]).seeds == [0, 1, 2]
    params = {"study": trial_context(preset=space.preset, fixed=space.fixed), "direction": space.directions[0],
              "seed": 4, "variant": {"set": space.variants[0].set}}
    assert trial_config(params).runtime.seed == 4


def test_a_search_samples_on_one_seed(tmp_path):
    path = tmp_path / "space.yaml"
    hpo = (REPO / "search_spaces" / "hpo.yaml").read_text()
    path.write_text(hpo + "seeds: [0, 1]\n")
    with pytest.raises(SpaceError, match="a search samples on one seed"):
        load_space(path)


def test_the_readme_schema_block_is_generated_from_the_declaration():
    from reidmodel.schema import yaml_schema
    from study.spaces import SpaceFile

    readme = (REPO / "search_spaces" / "README.md").read_text()
    block = readme.split("## Schema")[1].split("```yaml\n")[1].split("```")[0]
    assert block.splitlines() == yaml_schema(SpaceFile), "regenerate it: python -m study.spaces"
    keys = [line.split(":")[0].strip(" -") for line in block.splitlines()]
    assert {"k_evidence", "claims", "margin", "start_points", "step", "max_concurrent"} <= set(keys)


@pytest.fixture
def real_root(tmp_path):
    """A data root that holds the real datasets' folders (empty: loading a space only needs the names)."""
    for folder in ("Market-1501-v15.09.15", "DukeMTMC-reID"):
        (tmp_path / "reid" / folder).mkdir(parents=True)
    return tmp_path / "reid"


@pytest.mark.parametrize("name", ["ablation-paper", "ablation-modern", "hpo-paper", "hpo-modern"])
def test_paper_spaces_run_the_paper_preset_on_real_data_with_gpus(name, real_root):
    space = load_space(name, real_root)
    base = space.base_config()
    assert space.preset == "paper" and space.name == name
    assert space.selection == ("oracle" if space.kind == "search" else "label_free")
    assert (base.model.backbone, base.model.pretrained, base.data.height, base.data.width) == (
        "resnet50", "imagenet", 256, 128)
    assert base.source.epochs == 120 and space.resources.gpus_per_trial > 0
    assert base.data.workers < space.resources.cpus_per_trial  # the loader's processes plus the training one
    assert all(name in ("market1501", "dukemtmc") for d in space.directions for name in d.split("->"))
    # None of the synthetic sets' clustering settings (k1 10 / k2 3 for 9 images per identity, eps 0.35).
    assert (base.ula.k1, base.ula.k2, base.ula.eps) != (10, 3, 0.35) and base.ula.min_samples == 4
    # A search starts from its reference setting; a grid fixes it.
    lr = space.search.start_points[0].params["adapt.lr"] if space.kind == "search" else base.adapt.lr
    if "modern" in name:
        assert (base.ula.distance, base.ula.k1, base.ula.k2, lr) == ("jaccard", 30, 6, 3.5e-4)
    else:
        assert (base.ula.distance, lr, base.adapt.cycles) == ("euclidean", 1e-7, 16)


def test_paper_ablations_inherit_the_synthetic_ablations_rows_and_tables(real_root):
    synthetic = load_space("ablation")
    for name in ("ablation-paper", "ablation-modern"):
        space = load_space(name, real_root)
        assert [v.name for v in space.variants] == [v.name for v in synthetic.variants]
        assert space.tables == synthetic.tables and len(space.trials()) == 20
    assert load_space("ablation-modern", real_root).base_config().ula.eps == 0.6
    assert load_space("hpo-modern", real_root).search.start_points[0].params["ula.eps"] == 0.6


def test_a_paper_space_without_data_root_names_the_flag():
    with pytest.raises(SpaceError, match="dukemtmc is real data: pass --data-root DIR"):
        load_space("ablation-paper")


def test_preset_replaces_the_spaces_own(real_root):
    assert load_space("smoke", preset_name="paper").base_config().model.backbone == "resnet50"
    assert load_space("hpo-paper", real_root, preset_name="cpu").base_config().model.backbone == "resnet10"


def test_base_spaces_that_loop_fail_with_one_line(tmp_path):
    (tmp_path / "a.yaml").write_text(f"base: {tmp_path / 'b.yaml'}\n")
    (tmp_path / "b.yaml").write_text(f"base: {tmp_path / 'a.yaml'}\n")
    with pytest.raises(SpaceError, match="base spaces loop"):
        load_space(tmp_path / "a.yaml")


MU = "  kd.mu: {type: uniform, low: 0.1, high: 0.9}"


@pytest.mark.parametrize("text, metric, needed", [
    (search(MU, selection=None), "target_mAP", "oracle"),  # the default metric reads the test split
    (search(MU, "search: {metric: target_val_mAP}\n", None), "target_val_mAP", "validation"),
    (search(MU, "search: {objectives: [{metric: snd, mode: max}, {metric: ula_nmi, mode: max}]}\n", None),
     "ula_nmi", "oracle"),
    (search(MU, selection="validation"), "target_mAP", "oracle"),  # validation labels do not cover the test split
    (GRID + "scheduler: {type: asha}\n", "target_mAP", "oracle"),  # ASHA chooses which trials go on
])
def test_choosing_on_target_labels_is_refused_unless_declared(tmp_path, text, metric, needed):
    with pytest.raises(SpaceError) as refused:
        load_space(write(tmp_path, text))
    message = str(refused.value)
    assert "\n" not in message and f"search metric {metric!r} reads target labels" in message
    assert f"declare selection: {needed}" in message
    label_free = message.split("optimise a label-free metric: ")[1].split(", ")
    assert {"snd", "class_ami", "info_max", "bnm", "ula_noise_fraction", "source_mAP"} <= set(label_free)
    assert not {"target_mAP", "target_val_mAP", "ula_nmi", "ula_precision"} & set(label_free)
    assert not {"cycle", "time_s", "ula_num_clusters"} & set(label_free)  # no direction: nothing to optimise
    declared = re.sub(r"^selection: \w+\n", "", text, flags=re.M) + f"selection: {needed}\n"
    assert load_space(write(tmp_path, declared)).selection == needed


@pytest.mark.parametrize("text, selection", [
    (search(MU, "search: {metric: snd}\n", None), "label_free"),
    (search(MU, "search: {metric: ula_noise_fraction, mode: min}\n", None), "label_free"),
    (GRID, "label_free"),  # a grid without ASHA chooses nothing: its default search metric is not read
    (search(MU, "search: {metric: target_val_mAP}\n"), "oracle"),  # oracle covers validation
])
def test_label_free_choices_need_no_declaration(tmp_path, text, selection):
    assert load_space(write(tmp_path, text)).selection == selection


@pytest.mark.parametrize("name", ["hpo", "hpo-mo"])
def test_the_committed_searches_on_target_map_say_they_are_oracles(name):
    space = load_space(name)
    assert "target_mAP" in space.search.metrics and space.selection == "oracle"


def test_a_study_logged_before_the_selection_key_reads_as_what_its_metrics_needed():
    from study.spaces import selection_of

    logged = {"kind": "search", "search": {"metric": "target_mAP"}}
    assert selection_of(logged) == "oracle"
    assert selection_of({**logged, "search": {"metric": "bnm"}}) == "label_free"
    assert selection_of({"kind": "grid", "selection": "oracle"}) == "oracle"  # a confirmation carries its search's


def test_the_label_free_search_inherits_the_hpo_space_and_chooses_without_target_labels():
    space, oracle = load_space("hpo-labelfree"), load_space("hpo")
    assert (space.selection, space.search.metric, space.scheduler.type) == ("label_free", "info_max", "asha")
    assert space.params == oracle.params and space.fixed == oracle.fixed and oracle.selection == "oracle"
