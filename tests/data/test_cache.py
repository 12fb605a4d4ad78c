"""The disk-backed image cache: the same pixels as decoding in memory, reused when nothing changed, rebuilt
when a file changed or a build was cut short, one builder among concurrent processes, and row stacks that
read only what is asked for."""
import multiprocessing
import os
import pickle
import time

import cv2
import numpy as np
import pytest
from filelock import FileLock

import src.data.cache as cache
from src.core.errors import UserError
from src.data.cache_check import hash_rows
from src.data.images import decode_all, infer_spec, spec_from_facts, to_array
from src.data.rows import ConcatRows, RowView

from helpers import make_competition


@pytest.fixture
def images(tmp_path):
    data = make_competition(tmp_path / "comp", per_class=5, size_px=10)
    return sorted((data / "train").glob("*.png")), tmp_path / "cache"


def in_memory(paths, size_px=0):
    decoded = decode_all(paths)
    spec = infer_spec(decoded, size_px)
    return to_array(decoded, spec, "cubic")


def test_cached_rows_equal_decoding_in_memory_and_a_second_call_reuses_them(images, capsys):
    paths, folder = images
    first = cache.cached_images(paths, folder, "cubic", quiet=True, image_size_px=16)
    assert "image cache: built" in capsys.readouterr().out
    expected = in_memory(paths, 16)
    assert first.shape == expected.shape and np.array_equal(first[:], expected)
    assert first.sha1 == hash_rows(first.path, 16 * 16)[0]
    again = cache.cached_images(paths, folder, "cubic", quiet=True, image_size_px=16)
    assert "image cache: reused" in capsys.readouterr().out and again.path == first.path
    assert np.array_equal(again[[7, 2, 3]], expected[[7, 2, 3]])
    other = cache.cached_images(paths, folder, "cubic", quiet=True, image_size_px=12)  # another size: its own
    assert other.path != first.path and other.shape[1:] == (12, 12, 1)


def test_an_interrupted_or_changed_cache_is_rebuilt_never_trusted(images, capsys):
    paths, folder = images
    built = cache.cached_images(paths, folder, "cubic", quiet=True)
    meta = built.path.with_suffix(".json")
    meta.unlink()  # the build stopped before its meta was written
    cache.cached_images(paths, folder, "cubic", quiet=True)
    assert capsys.readouterr().out.count("built") == 2
    with open(built.path, "r+b") as handle:  # a data file cut short
        handle.truncate(10)
    rebuilt = cache.cached_images(paths, folder, "cubic", quiet=True)
    assert "built" in capsys.readouterr().out and np.array_equal(rebuilt[:], in_memory(paths))
    cv2.imwrite(str(paths[3]), np.full((10, 10), 255, np.uint8))  # an image changed: other files, other key
    changed = cache.cached_images(paths, folder, "cubic", quiet=True)
    assert changed.path != built.path and (changed[3] == 255).all()


def test_a_cache_of_the_right_size_whose_bytes_changed_is_rebuilt_not_trusted(images, capsys):
    paths, folder = images
    built = cache.cached_images(paths, folder, "cubic", quiet=True)
    expected = in_memory(paths)
    row_bytes = int(np.prod(expected.shape[1:]))
    with open(built.path, "r+b") as handle:  # one row overwritten in place: same size, same meta
        handle.seek(7 * row_bytes)
        handle.write(bytes(row_bytes))
    capsys.readouterr()
    again = cache.cached_images(paths, folder, "cubic", quiet=True)
    out = capsys.readouterr().out
    assert "changed since it was built (row 7 no longer matches" in out and "image cache: built" in out
    assert out.count("changed since it was built") == 1
    assert np.array_equal(again[:], expected)
    # A cache from before row hashes: hashed whole once against its meta's sha1, then its row hashes are written.
    built.path.with_suffix(".rows").unlink()
    cache.cached_images(paths, folder, "cubic", quiet=True)
    assert "reused" in capsys.readouterr().out and built.path.with_suffix(".rows").is_file()
    built.path.with_suffix(".rows").unlink()
    with open(built.path, "r+b") as handle:
        handle.write(bytes(row_bytes))
    cache.cached_images(paths, folder, "cubic", quiet=True)
    assert "no longer match the sha1 recorded" in capsys.readouterr().out


def test_parallel_decoding_writes_the_same_bytes_and_a_worker_error_is_one_line(images, monkeypatch, capsys):
    paths, folder = images
    serial = cache.cached_images(paths, folder / "serial", "cubic", quiet=True, image_size_px=16)
    monkeypatch.setattr(cache, "worker_count", lambda: 2)
    monkeypatch.setattr(cache, "PARALLEL_FROM_IMAGES", 1)
    monkeypatch.setattr(cache, "IMAGES_PER_TASK", 4)
    parallel = cache.cached_images(paths, folder / "parallel", "cubic", quiet=True, image_size_px=16)
    assert parallel.sha1 == serial.sha1
    paths[5].write_bytes(b"\x89PNG broken")
    with pytest.raises(UserError, match="truncated PNG"):
        cache.cached_images(paths, folder / "broken", "cubic", quiet=True, image_size_px=16)
    assert not list((folder / "broken").glob("*.u8*"))  # nothing half-written


def _build_to_file(paths, folder, out):
    import contextlib
    with open(out, "w") as handle, contextlib.redirect_stdout(handle):
        cache.cached_images(paths, folder, "cubic", quiet=True)


@pytest.mark.slow
def test_a_second_process_waits_for_the_builder_then_reuses(images, capsys):
    paths, folder = images
    spec = spec_from_facts(cache.scan_images(paths, folder, quiet=True), 0)
    key = cache.cache_key(cache.files_key(paths), spec, "cubic")
    lock = FileLock(str(folder / f"{key}.lock"))
    lock.acquire()  # as if another process were building this entry
    out = folder / "child.txt"
    child = multiprocessing.get_context("spawn").Process(target=_build_to_file, args=(paths, folder, out))
    child.start()
    try:
        deadline = time.time() + 60
        while "waiting" not in (out.read_text() if out.is_file() else "") and time.time() < deadline:
            time.sleep(0.1)
        assert child.is_alive() and not (folder / f"{key}.u8").exists()  # blocked: nothing written meanwhile
    finally:
        lock.release()
    child.join(60)
    assert child.exitcode == 0 and "image cache: built" in out.read_text()
    cache.cached_images(paths, folder, "cubic", quiet=True)
    assert "image cache: reused" in capsys.readouterr().out


def test_row_stacks_index_like_arrays_and_pickle_without_a_file_handle(images):
    paths, folder = images
    base = cache.cached_images(paths, folder, "cubic", quiet=True)
    expected = in_memory(paths)
    view = RowView(base, [4, 0, 9])
    assert np.array_equal(view[:], expected[[4, 0, 9]]) and np.array_equal(view[-1], expected[9])
    assert np.array_equal(RowView(base, expected[:, 0, 0, 0] >= 0)[:], expected)  # a boolean mask
    extra = np.zeros((2, *expected.shape[1:]), np.uint8)
    both = ConcatRows([view, extra])
    assert len(both) == 5 and np.array_equal(both[[4, 0, 3]], np.stack([extra[1], expected[4], extra[0]]))
    assert np.array_equal(both[1:3], expected[[0, 9]])
    base[0]  # opens the file in this process
    copy = pickle.loads(pickle.dumps(base))  # a loader worker gets its own descriptor when it reads
    assert copy._fd is None and np.array_equal(copy[[1]], expected[[1]])


def test_the_default_cache_sits_beside_the_data_unless_that_folder_is_read_only(tmp_path):
    (tmp_path / "comps" / "a").mkdir(parents=True)
    assert cache.default_cache_dir(tmp_path / "comps" / "a") == tmp_path / "comps" / ".image_cache"
    read_only = tmp_path / "input"
    (read_only / "comp").mkdir(parents=True)
    read_only.chmod(0o555)  # as a Kaggle input folder (root could still write there: the mode decides)
    try:
        assert cache.default_cache_dir(read_only / "comp") == cache.Path.home() / ".cache" / "imgkit"
    finally:
        read_only.chmod(0o755)


def test_a_same_size_change_with_the_old_modification_time_is_still_seen(images, capsys):
    paths, folder = images
    before = cache.cached_images(paths, folder, "cubic", quiet=True)
    stat = paths[2].stat()
    image = cv2.imread(str(paths[2]), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(paths[2]), 255 - image)
    os.utime(paths[2], ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the old mtime copied back, as rsync -a does
    after = cache.cached_images(paths, folder, "cubic", quiet=True)
    assert after.path != before.path and np.array_equal(after[2], 255 - before[2])


def test_a_complete_cache_is_read_without_its_lock_and_a_bad_folder_is_one_line(images, monkeypatch, tmp_path):
    paths, folder = images
    cache.cached_images(paths, folder, "cubic", quiet=True)

    def no_lock(*args):
        raise AssertionError("a complete cache (e.g. on a read-only mount) must not need its lock")
    monkeypatch.setattr(cache, "cache_lock", no_lock)
    assert len(cache.cached_images(paths, folder, "cubic", quiet=True)) == len(paths)
    monkeypatch.undo()
    (tmp_path / "a_file").write_text("")
    with pytest.raises(UserError, match="cannot write the image cache there"):
        cache.cached_images(paths, tmp_path / "a_file" / "cache", "cubic", quiet=True)


def test_rows_outside_the_stack_are_an_index_error(images):
    paths, folder = images
    built = cache.cached_images(paths, folder, "cubic", quiet=True)
    for bad in ([len(paths)], [-len(paths) - 1]):
        with pytest.raises(IndexError, match="out of range"):
            built[bad]


def test_photos_of_mixed_sizes_and_names_cache_at_the_median_side_in_colour(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "photos"
    folder.mkdir()
    paths = []
    for i, (h, w) in enumerate([(40, 60), (80, 50), (30, 30), (64, 96), (50, 70)]):
        path = folder / (f"ant photo {i}.jpg" if i == 1 else f"img{i}.jpg")  # a space, as in real data sets
        cv2.imwrite(str(path), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        paths.append(path)
    built = cache.cached_images(paths, tmp_path / "cache", "cubic", quiet=True)
    assert built.shape == (5, 70, 70, 3)  # the median of the longer sides, square; RGB
    decoded = cv2.cvtColor(cv2.imread(str(paths[3])), cv2.COLOR_BGR2RGB)
    assert np.array_equal(built[3], cv2.resize(decoded, (70, 70), interpolation=cv2.INTER_CUBIC))


def test_without_a_size_large_photos_are_scaled_to_a_128_px_longer_side_and_the_run_says_so(tmp_path, capsys):
    from src.data.images import ImageFacts, ImageSpec
    uniform = [ImageFacts(300, 200, False, str(i)) for i in range(3)]
    mixed = [ImageFacts(h, w, False, str(i)) for i, (h, w) in enumerate([(500, 375), (333, 500), (600, 800)])]
    assert spec_from_facts(uniform, 0) == ImageSpec(128, 85, 3)  # aspect kept
    assert (spec_from_facts(mixed, 0).height_px, spec_from_facts(mixed, 0).width_px) == (128, 128)
    assert spec_from_facts(mixed, 300).height_px == 300  # a requested size is taken as it is, larger or not
    small = [ImageFacts(96, 128, True, "a")]
    assert (spec_from_facts(small, 0).height_px, spec_from_facts(small, 0).width_px) == (96, 128)  # at the cap
    rng = np.random.default_rng(0)
    folder = tmp_path / "photos"
    folder.mkdir()
    paths = []
    for i, (h, w) in enumerate([(200, 300), (260, 260), (240, 320)]):
        paths.append(folder / f"img{i}.png")
        cv2.imwrite(str(paths[-1]), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    built = cache.cached_images(paths, tmp_path / "cache", "area", quiet=True)
    assert built.shape == (3, 128, 128, 3)
    assert "the data's 300x300 px scaled to 128x128" in capsys.readouterr().out
    assert cache.cached_images(paths, tmp_path / "cache", "area", quiet=True, image_size_px=200).shape[1] == 200
    assert "scaled" not in capsys.readouterr().out
