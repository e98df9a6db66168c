"""Trials run at the driver's priority: Ray's default (workers niced to 15) let any other process
on a busy machine starve a search's evaluations."""

from __future__ import annotations

import os

import ray

from automl.search.runner import init_ray


def test_embedded_ray_workers_are_not_niced_below_the_driver():
    init_ray(None)

    @ray.remote(num_cpus=1)
    def niceness() -> int:
        return os.nice(0)

    assert ray.get(niceness.remote(), timeout=120) == os.nice(0)
