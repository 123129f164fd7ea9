"""PyTorch re-statement of the original's focal loss, for lits' parity tests only.

Softmax probabilities p; alpha = class_weights / sum(class_weights); one-hot target clamped
to [smooth / (C - 1), 1 - smooth]; pt = sum_c onehot_c * p_c + smooth;
loss = mean over voxels of -alpha[target] * (1 - pt)^gamma * ln(pt).
"""

import torch


def focal_loss(logits, target, class_weights, gamma=2.0, smooth=1e-5):
    num_classes = logits.shape[1]
    p = torch.softmax(logits, dim=1)
    alpha = torch.as_tensor(class_weights, dtype=p.dtype, device=p.device)
    alpha = alpha / alpha.sum()
    onehot = torch.nn.functional.one_hot(target, num_classes).movedim(-1, 1).to(p.dtype)
    onehot = onehot.clamp(smooth / (num_classes - 1), 1.0 - smooth)
    pt = (onehot * p).sum(dim=1) + smooth
    a = alpha[target]
    return (-a * (1.0 - pt).pow(gamma) * pt.log()).mean()

