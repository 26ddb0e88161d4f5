"""The tamper-evident exchange log: chain, checkpoints, verification, personal-data crypto."""
