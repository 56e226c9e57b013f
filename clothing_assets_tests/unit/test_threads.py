"""Torch threads per thread (`ml.threads`): the model server's forward thread alone runs torch's
intra-op threads, every other thread one."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from clothing_assets.ml.threads import use_threads_here
from clothing_assets.serve.batcher import Batcher


@pytest.fixture
def one_thread_process():
    """The process at one torch thread, as the server sets it; restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def on_new_thread(function, *args):
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(function, *args).result()


def test_a_thread_takes_its_own_count_and_leaves_the_others_alone(one_thread_process):
    def take_three() -> tuple[int, int]:
        given = use_threads_here(3)
        return given, torch.get_num_threads()

    assert on_new_thread(take_three) == (3, 3)
    assert torch.get_num_threads() == 1  # this thread
    assert on_new_thread(torch.get_num_threads) == 1  # a thread started afterwards


def test_the_batcher_forwards_with_its_threads_and_decodes_with_one(one_thread_process):
    batcher = Batcher(max_batch_size=4, max_wait_ms=1, decode_threads=2, forward_threads=2)
    assert batcher.torch_threads() == {"forward": 2, "decode": 1}
