"""kNN auto-labelling (agreement rule), the review queue with hidden controls, majority vote with control
accuracy, the recorded merge, the Label Studio round trip (JSON fixtures in the documented format), and
auto_label.py + import_reviews.py end to end on a tiny experiment."""
import json
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pandas as pd
import pytest

from src.core.errors import UserError
from src.labels.knn import AutoLabelRule, auto_label, knn_votes, review_queue, uncertainty
from src.labels.labelstudio import export_tasks, read_labelstudio_export
from src.labels.review import control_accuracy, majority_vote, merge_labels, read_reviews

from helpers import run_script, train


def test_knn_votes_and_the_agreement_rule():
    ref = np.array([[1, 0], [0.99, 0.14], [0, 1], [0.14, 0.99]], dtype=np.float32)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    labels = np.array([0, 0, 1, 1])
    query = np.array([[1, 0.05], [0.7, 0.7]], dtype=np.float32)
    query /= np.linalg.norm(query, axis=1, keepdims=True)
    votes = knn_votes(ref, labels, query, k=2, num_classes=2)
    assert votes.tolist() == [[2, 0], [1, 1]]
    probs = np.array([[0.9, 0.1], [0.6, 0.4]])
    accepted, label = auto_label(votes, probs, AutoLabelRule(k=2, min_agreement=1.0))
    assert accepted.tolist() == [True, False] and label[0] == 0
    disagree = auto_label(votes, np.array([[0.2, 0.8], [0.6, 0.4]]), AutoLabelRule(k=2))[0]
    assert disagree.tolist() == [False, False]  # the classifier must agree with the neighbours
    assert not auto_label(votes, probs, AutoLabelRule(k=2, min_confidence=0.95))[0][0]
    self_votes = knn_votes(ref, labels, ref, k=1, num_classes=2, exclude_self=True)
    assert self_votes.argmax(1).tolist() == [0, 0, 1, 1]  # each row's nearest other row, not itself


def test_queue_puts_the_most_uncertain_first_and_hides_controls():
    probs = np.array([[0.9, 0.1], [0.5, 0.5], [0.7, 0.3]])
    votes = np.array([[3, 0], [2, 1], [2, 1]])
    unc = uncertainty(probs, votes)
    queue, controls = review_queue(["a", "b", "c"], unc, ["0", "0", "0"], "entropy", ["k1", "k2", "k3"],
                                   ["0", "1", "1"], ["1", "1", "0"], control_share=0.5, seed=1)
    assert queue[~queue["control"]]["image_id"].tolist() == ["b", "c", "a"]
    assert len(controls) == 2 and set(controls["id"]) <= {"k1", "k2", "k3"} and queue["control"].sum() == 2
    assert queue["item"].tolist() == [1, 2, 3, 4, 5]
    # What reviewers see cannot tell a control from a real item: opaque ids in order, a suggestion on each.
    key = queue["id"].iloc[0][1:7]
    assert queue["id"].tolist() == [f"q{key}-{n:05d}" for n in range(1, 6)]
    assert (queue["suggested"] != "").all()
    # Another queue (other images, other order) gets other ids: old answers cannot land on new images.
    other, _ = review_queue(["c", "b", "a"], unc.iloc[::-1].reset_index(drop=True), ["0", "0", "0"], "entropy",
                            ["k1", "k2", "k3"], ["0", "1", "1"], ["1", "1", "0"], control_share=0.5, seed=2)
    assert not set(other["id"]) & set(queue["id"])
    suggested = dict(zip(["k1", "k2", "k3"], ["1", "1", "0"]))
    assert (queue.loc[queue["control"], "suggested"] == queue.loc[queue["control"], "image_id"].map(suggested)).all()


def test_majority_vote_with_control_accuracy(tmp_path):
    key = pd.DataFrame({"id": ["x", "y", "z", "c1", "c2"]})
    controls = pd.DataFrame({"id": ["c1", "c2"], "true_label": ["cat", "dog"]})
    reviews = {"alice": [("x", "cat"), ("y", "dog"), ("z", "cat"), ("c1", "cat"), ("c2", "dog")],
               "bob": [("x", "cat"), ("y", "cat"), ("z", ""), ("c1", "cat"), ("c2", "dog")],
               "carl": [("x", "dog"), ("y", "dog"), ("z", "dog"), ("c1", "dog"), ("c2", "cat")]}
    paths = []
    for name, rows in reviews.items():
        paths.append(tmp_path / f"{name}.csv")
        pd.DataFrame(rows, columns=["id", "label"]).to_csv(paths[-1], index=False)
    got = read_reviews(paths, key)
    assert len(got) == 14  # bob left z empty: not reviewed
    accuracy = control_accuracy(got, controls).set_index("reviewer")["control_accuracy"].to_dict()
    assert accuracy == {"alice": 1.0, "bob": 1.0, "carl": 0.0}
    votes = majority_vote(got[~got["id"].isin(controls["id"])], {"alice", "bob"}, {"cat", "dog"}).set_index("id")
    assert votes.loc["x", "label"] == "cat" and votes.loc["y", "status"] == "tie" and votes.loc["z", "votes"] == 1
    everyone = majority_vote(got[~got["id"].isin(controls["id"])], {"alice", "bob", "carl"}, {"cat", "dog"})
    assert everyone.set_index("id").loc["y", "label"] == "dog"  # carl's vote breaks the tie when trusted
    with pytest.raises(UserError, match="label 'kat'"):
        majority_vote(pd.DataFrame({"id": ["x"], "label": ["kat"], "reviewer": ["a"]}), {"a"}, {"cat", "dog"})
    pd.DataFrame({"id": ["nope"], "label": ["cat"]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(UserError, match="bad.csv line 2: id 'nope'"):
        read_reviews([tmp_path / "bad.csv"], key)


def test_merge_copies_images_appends_rows_and_records(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "unl").mkdir()
    (tmp_path / "unl" / "u1.png").write_bytes(b"png-bytes")
    train_csv = tmp_path / "train.csv"
    pd.DataFrame({"image": ["t1"], "label": ["cat"]}).to_csv(train_csv, index=False)
    rows = pd.DataFrame({"id": ["u1.png"], "label": ["dog"], "path": [str(tmp_path / "unl" / "u1.png")]})
    merge_labels(train_csv, tmp_path / "train", rows, tmp_path / "train_v2.csv", "image", "label", "test")
    assert pd.read_csv(tmp_path / "train_v2.csv").values.tolist() == [["t1", "cat"], ["u1.png", "dog"]]
    assert (tmp_path / "train" / "u1.png").read_bytes() == b"png-bytes" and (tmp_path / "unl" / "u1.png").exists()
    record = pd.read_csv(tmp_path / "train_v2.changes.csv")
    assert record[["id", "old_label", "new_label"]].values.tolist() == [["u1.png", "(new row)", "dog"]]
    with pytest.raises(UserError, match="already has id 'u1.png'"):
        merge_labels(tmp_path / "train_v2.csv", tmp_path / "train", rows, tmp_path / "v3.csv", "image", "label", "t")


@pytest.mark.slow
def test_auto_label_then_import_reviews_end_to_end(demo, tmp_path):
    import shutil
    data = tmp_path / "comp"
    shutil.copytree(demo["data"], data)
    runs = tmp_path / "runs"
    assert train(demo, "knn", "--fold", "0", "--data-dir", str(data), runs=runs).returncode == 0
    out = tmp_path / "reports"
    proc = run_script("auto_label.py", "--exp", "knn", "--runs-dir", str(runs), "--out-dir", str(out), "--k", "3",
                      "--truth", str(data / "unlabeled_solution.csv"), "--quiet")
    assert proc.returncode == 0, proc.stderr
    folder = out / "auto_label_knn"
    queue = pd.read_csv(folder / "review_queue.csv", dtype=str)
    key = pd.read_csv(folder / "queue_key.csv", dtype={"id": str})
    auto = pd.read_csv(folder / "auto_labels.csv", dtype=str)
    assert len(auto) + (~key["control"]).sum() == 3800 and key["control"].sum() >= 1
    assert "control" not in queue.columns and "auto-label accuracy (truth)" in proc.stdout
    for name in ("review_queue.png", "embedding_map.png", "controls.csv", "queue.json", "labelstudio_config.xml"):
        assert (folder / name).is_file(), name
    tasks = json.loads((folder / "labelstudio_tasks.json").read_text())
    assert [t["data"]["kit_id"] for t in tasks] == queue["id"].tolist()
    # Nothing a reviewer gets marks a control: opaque ids, a suggestion each, one image folder, one format.
    assert queue["id"].str.fullmatch(r"q[0-9a-f]{6}-\d{5}").all() and (queue["suggested"].fillna("") != "").all()
    folds = pd.read_csv(demo["folds"], dtype=str)
    fold0 = set(folds.loc[folds["fold"] == "0", "image"])
    assert set(key.loc[key["control"], "image_id"]) <= fold0  # controls: rows fold 0's model never trained on
    assert all(t["data"]["image"].endswith(f"review_images/{t['data']['kit_id']}.png") for t in tasks)
    assert sorted(p.stem for p in (folder / "review_images").iterdir()) == sorted(queue["id"])
    truth = pd.read_csv(folder / "controls.csv", dtype=str).set_index("id")["true_label"]
    image_of = queue["id"].map(dict(zip(key["id"], key["image_id"])))
    is_control = image_of.isin(truth.index)
    # The reviewer answers every control item right and labels the first 6 real items.
    filled = pd.concat([queue[is_control], queue[~is_control].head(6)]).assign(
        label=lambda f: image_of[f.index].map(truth).fillna("3"))
    filled.to_csv(tmp_path / "ann.csv", index=False)
    proc = run_script("import_reviews.py", str(tmp_path / "ann.csv"), "--queue-dir", str(folder), "--out",
                      str(data / "train_v2.csv"))
    assert proc.returncode == 0, proc.stderr
    assert "trusted reviewers: ann" in proc.stdout
    accuracy = pd.read_csv(folder / "reviewer_accuracy.csv")
    assert accuracy["control_accuracy"].tolist() == [1.0] and "agrees_with_suggestion" in accuracy
    merged = pd.read_csv(data / "train_v2.csv", dtype=str)
    assert len(merged) == 200 + 6 and (merged["label"].iloc[200:] == "3").all()
    assert not merged["image"].isin(truth.index).iloc[200:].any()  # control items are never merged
    assert all((data / "train" / name).is_file() for name in merged["image"].iloc[200:])
    assert len(pd.read_csv(data / "train_v2.changes.csv")) == 6


FIXTURE = Path(__file__).resolve().parent / "fixtures" / "labelstudio_export.json"


def test_labelstudio_export_in_the_documented_format_is_read():
    rows = read_labelstudio_export(FIXTURE)
    assert rows.values.tolist() == [["un_00001.png", "7", "ls-10"], ["un_00001.png", "1", "ls-bob@example.com"]]


def test_labelstudio_tasks_round_trip_into_the_vote(tmp_path):
    (tmp_path / "unl").mkdir()
    queue = pd.DataFrame({"item": [1, 2, 3], "id": ["u1.png", "u 2.png", "k1"], "suggested": ["0", "1", ""],
                          "path": [str(tmp_path / "unl" / "u1.png"), str(tmp_path / "unl" / "u 2.png"),
                                   str(tmp_path / "train" / "k1.png")]})
    export_tasks(queue, ["0", "1"], tmp_path, tmp_path)
    tasks = json.loads((tmp_path / "labelstudio_tasks.json").read_text())
    assert tasks[1]["data"] == {"image": "/data/local-files/?d=unl/u%202.png", "kit_id": "u 2.png", "kit_item": 2}
    config = ElementTree.fromstring((tmp_path / "labelstudio_config.xml").read_text())
    assert [c.get("value") for c in config.iter("Choice")] == ["0", "1"]
    assert config.find("Choices").get("toName") == config.find("Image").get("name")
    # What Label Studio exports after two annotators answered (same task objects, annotations added).
    answers = {"u1.png": ["1", "1"], "u 2.png": ["0", "1"], "k1": ["0", "0"]}
    for task in tasks:
        task["annotations"] = [{"result": [{"type": "choices", "from_name": "label", "to_name": "image",
                                            "value": {"choices": [label]}}], "completed_by": who,
                                "was_cancelled": False} for who, label in enumerate(answers[task["data"]["kit_id"]])]
    (tmp_path / "export.json").write_text(json.dumps(tasks))
    reviews = read_reviews([tmp_path / "export.json"], queue)
    assert len(reviews) == 6 and set(reviews["reviewer"]) == {"ls-0", "ls-1"}
    accuracy = control_accuracy(reviews, pd.DataFrame({"id": ["k1"], "true_label": ["0"]}))
    assert accuracy["control_accuracy"].tolist() == [1.0, 1.0]
    votes = majority_vote(reviews[reviews["id"] != "k1"], {"ls-0", "ls-1"}, {"0", "1"}).set_index("id")
    assert votes.loc["u1.png", "label"] == "1" and votes.loc["u 2.png", "status"] == "tie"
    del tasks[0]["data"]["kit_id"]
    (tmp_path / "foreign.json").write_text(json.dumps(tasks))
    with pytest.raises(UserError, match="task 1: no data.kit_id"):
        read_labelstudio_export(tmp_path / "foreign.json")
    with pytest.raises(UserError, match="outside the Label Studio document root"):
        export_tasks(queue, ["0", "1"], tmp_path, tmp_path / "unl")
