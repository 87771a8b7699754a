"""What the DINO and the fine-tuning loops share, in torch alone (no scikit-learn).

`loop`: the training loop both methods run (device, epochs, checkpoints, Ctrl-C, NaN checks);
`callbacks`: the per-epoch hooks it calls; `checkpoints`: checkpoint files and run identities;
`augment`: the multi-crop augmentation; `optimization`: AdamW, weight-decay groups and the
schedules; `precision`: autocast; `distributed`: ``torch.distributed`` helpers (``torchrun``);
`compilation`: ``torch.compile`` of a model's repeated blocks with a fallback to eager;
`statistics`: per-step values summed on the device and read on the host only now and then;
`transfer`: host-to-device copies.
"""
