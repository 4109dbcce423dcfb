"""Offline training of the PPD networks (needs the ``lightning`` extra).

* :mod:`~ppd_ros.training.targets`: official GT normalisation and multi-scale gradient loss.
* :mod:`~ppd_ros.training.networks`: ``model.*`` options -> the networks (registry names, exports, families).
* :mod:`~ppd_ros.training.module`: :class:`PPDTrainingModule` (flow-matching LightningModule).
* :mod:`~ppd_ros.training.datasets`: dataset readers, transforms, the resumable sharded sampler and
  :class:`DepthDataModule`.
* :mod:`~ppd_ros.training.export`: checkpoint -> exported model (read by :mod:`ppd_ros.nets.exported`).
* :mod:`~ppd_ros.training.safe_load`: checkpoints read with ``weights_only=True``.
* :mod:`~ppd_ros.training.cli`: the ``ppd-train`` command (LightningCLI).
"""
