"""Ctrl-C / SIGTERM held back around library calls that must not be cut in the middle."""
import os
import signal

import pytest

from src.core.interrupts import deferred_interrupts, raise_interrupt


@pytest.fixture
def sigterm_raises():
    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    yield
    signal.signal(signal.SIGTERM, previous)


def test_a_sigterm_inside_the_block_is_raised_when_the_block_ends_not_in_the_middle(sigterm_raises):
    done = []
    with pytest.raises(KeyboardInterrupt):
        with deferred_interrupts():
            os.kill(os.getpid(), signal.SIGTERM)
            done.append("after the signal")  # without deferral the handler raises before this line
    assert done == ["after the signal"]
    assert signal.getsignal(signal.SIGTERM) is raise_interrupt


def test_without_a_signal_the_block_runs_and_the_handlers_are_back():
    sigint = signal.getsignal(signal.SIGINT)
    with deferred_interrupts():
        assert signal.getsignal(signal.SIGINT) is not sigint
    assert signal.getsignal(signal.SIGINT) is sigint


def test_an_error_in_the_block_still_restores_the_handlers_and_delivers_the_signal(sigterm_raises):
    with pytest.raises(KeyboardInterrupt) as info:
        with deferred_interrupts():
            os.kill(os.getpid(), signal.SIGTERM)
            raise ValueError("library failure")
    assert isinstance(info.value.__context__, ValueError)
    assert signal.getsignal(signal.SIGTERM) is raise_interrupt


def test_a_sigterm_during_a_tensorboard_write_ends_after_the_write_and_the_board_still_closes(tmp_path,
                                                                                             sigterm_raises):
    from src.train.board import EpochBoard, tensorboard_available
    if not tensorboard_available():
        pytest.skip("tensorboard not installed")
    board = EpochBoard(tmp_path, True)
    writer = board.writer
    add_scalar = writer.add_scalar
    written = []

    def add_scalar_cut_by_a_kill(tag, value, step):  # the kill lands inside the writer's own code
        os.kill(os.getpid(), signal.SIGTERM)
        add_scalar(tag, value, step)
        written.append(tag)

    writer.add_scalar = add_scalar_cut_by_a_kill
    with pytest.raises(KeyboardInterrupt):
        board.scalars({"train_loss": 1.0, "val_accuracy": 0.5}, 0)
    assert written == ["train/train_loss", "val/accuracy"]  # the whole epoch was written, then the interrupt
    board.close()
    assert board.writer is None and list((tmp_path / "tb").iterdir())
