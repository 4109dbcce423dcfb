"""Offline training of the PPD networks (needs the ``lightning`` extra).

* :mod:`~ppd_ros.training.targets`: official GT normalisation and multi-scale gradient loss.
* :mod:`~ppd_ros.training.module`: :class:`PPDTrainingModule` (flow-matching LightningModule).
* :mod:`~ppd_ros.training.datasets`: dataset readers, transforms and :class:`DepthDataModule`.
* :mod:`~ppd_ros.training.export`: checkpoint -> node weights (+ JSON config).
* :mod:`~ppd_ros.training.cli`: the ``ppd-train`` command (LightningCLI).
"""
