"""What the DINO and the fine-tuning loops share, in torch alone (no scikit-learn).

`compilation`: ``torch.compile`` of a model's repeated blocks with a fallback to eager;
`statistics`: per-step values summed on the device and read on the host only now and then.
"""
