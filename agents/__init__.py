"""Reinforcement-learning compression agents (AMC/HAQ style) on stable-baselines3.

* :mod:`agents.env`        the gymnasium env: one step per layer, budgets met by construction
* :mod:`agents.strategy`   ``ddpg`` (default), ``td3``, ``sac``, ``ppo`` as ask/tell strategies
* :mod:`agents.hparams`    hyper-parameters from the papers, overridable via
                           ``StrategyOptions.extra["agent_kwargs"]``
* :mod:`agents.noise`      truncated-normal exploration with AMC's decaying sigma
* :mod:`agents.checkpoint` model + replay buffer + counters, so a stopped search resumes
* :mod:`agents.curve`      the learning curve (JSON + PNG) in the search's output directory

The registry in :mod:`automl.search.registry` names these strategies by import string, so
``automl`` never imports ``agents``.
"""
