import numpy as np
import pandas as pd
import pytest

from src.core.errors import UserError
from src.infer.submission import build_submission, read_sample, read_solution, score_frame

CLASSES = ["cat", "dog", "owl"]


@pytest.fixture
def sample():
    return pd.DataFrame({"id": ["c", "a", "b"], "label": ["cat", "cat", "cat"]})


def test_submission_matches_sample_order_and_header(sample):
    probs = np.array([[0.1, 0.8, 0.1], [0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    out = build_submission(sample, CLASSES, probs, ["dog", "cat", "owl"], proba=False, source="s.csv")
    assert list(out.columns) == ["id", "label"] and list(out["id"]) == ["c", "a", "b"]
    assert list(out["label"]) == ["dog", "cat", "owl"]


def test_proba_fills_class_columns_in_the_samples_order():
    sample = pd.DataFrame({"id": ["x", "y"], "owl": 0, "cat": 0, "dog": 0})
    probs = np.array([[0.1, 0.2, 0.7], [0.6, 0.3, 0.1]])
    out = build_submission(sample, CLASSES, probs, [], proba=True, source="s.csv")
    assert list(out.columns) == ["id", "owl", "cat", "dog"] and list(out["owl"]) == [0.7, 0.1]


def test_binary_proba_with_one_column_gets_the_second_class_probability():
    sample = pd.DataFrame({"id": ["x", "y"], "target": 0.5})
    out = build_submission(sample, ["neg", "pos"], np.array([[0.9, 0.1], [0.2, 0.8]]), [], True, "s.csv")
    assert list(out["target"]) == [0.1, 0.8]


def test_columns_that_cannot_be_filled_are_an_error(sample):
    with pytest.raises(UserError, match="not the class names"):
        build_submission(sample, CLASSES, np.ones((3, 3)) / 3, [], proba=True, source="s.csv")


def test_sample_with_duplicate_ids_is_refused(tmp_path):
    (tmp_path / "s.csv").write_text("id,label\na,0\na,0\n")
    with pytest.raises(UserError, match="'a' appears twice"):
        read_sample(tmp_path / "s.csv")


def test_scorer_splits_public_and_private_and_counts_unknown_labels_wrong():
    solution = pd.DataFrame({"id": list("abcd"), "label": ["cat", "dog", "cat", "owl"],
                             "Usage": ["Public", "Public", "Private", "Private"]})
    sub = pd.DataFrame({"id": list("dcba"), "label": ["owl", "cat", "dog", "zebra"]})
    scores = score_frame(sub, solution)
    assert scores == {"metric": "accuracy", "public": 0.5, "private": 1.0}


def test_scorer_handles_probability_submissions_and_refuses_wrong_ids():
    solution = pd.DataFrame({"id": ["a", "b"], "label": ["cat", "dog"], "Usage": ["Public", "Private"]})
    sub = pd.DataFrame({"id": ["a", "b"], "cat": [0.8, 0.3], "dog": [0.2, 0.7]})
    scores = score_frame(sub, solution)
    assert scores["metric"] == "log_loss"
    assert scores["public"] == pytest.approx(-np.log(0.8)) and scores["private"] == pytest.approx(-np.log(0.7))
    with pytest.raises(UserError, match="ids do not match"):
        score_frame(sub.iloc[:1], solution)


def test_solution_without_public_or_private_rows_is_refused(tmp_path):
    (tmp_path / "solution.csv").write_text("id,label,Usage\na,cat,public\nb,dog,private\n")
    with pytest.raises(UserError, match="no 'Public'/'Private' rows"):
        read_solution(tmp_path / "solution.csv")


def test_binary_probability_column_means_the_second_class_in_numeric_order():
    solution = pd.DataFrame({"id": ["a", "b"], "label": ["9", "10"], "Usage": ["Public", "Private"]})
    sub = pd.DataFrame({"id": ["a", "b"], "label": [0.01, 0.99]})  # P(class '10'), '10' sorts after '9'
    scores = score_frame(sub, solution)
    assert scores["public"] == pytest.approx(-np.log(0.99)) and scores["private"] == pytest.approx(-np.log(0.99))


def test_probability_submission_with_eleven_integer_classes_is_scored():
    classes = [str(i) for i in range(11)]  # text order puts '10' after '1'; the class order is numeric
    solution = pd.DataFrame({"id": ["a", "b"], "label": ["10", "2"], "Usage": ["Public", "Private"]})
    probs = np.full((2, 11), 0.01)
    probs[0, 10], probs[1, 2] = 0.9, 0.9
    sub = pd.concat([solution[["id"]], pd.DataFrame(probs, columns=classes)[sorted(classes)]], axis=1)
    scores = score_frame(sub, solution)
    assert scores["public"] == pytest.approx(-np.log(0.9)) and scores["private"] == pytest.approx(-np.log(0.9))


def test_a_stray_numeric_column_is_refused_not_scored_as_a_class():
    solution = pd.DataFrame({"id": ["a", "b"], "label": ["cat", "dog"], "Usage": ["Public", "Private"]})
    sub = pd.DataFrame({"id": ["a", "b"], "cat": [0.8, 0.3], "dog": [0.2, 0.7], "Usage": [1, 2]})
    with pytest.raises(UserError, match=r"columns \['Usage'\] are not classes"):
        score_frame(sub, solution)
