"""PyTorch re-statement of the reduced 3D U-Net of mlf-core liver-ct-segmentation.

Written for lits' parity tests and benchmarks only: module names reproduce the original's
state_dict keys so that weights move between this model and lits' UNet3d unchanged.
"""

import torch
from torch import nn


class ConvBlock(nn.Module):
    """[Dropout3d -> Conv3d 3x3x3 -> BatchNorm3d -> ReLU] x 2."""

    def __init__(self, cin, cout, dropout):
        super().__init__()
        self.drop_1 = nn.Dropout3d(dropout)
        self.conv_1 = nn.Conv3d(cin, cout, 3, padding=1)
        self.batch_norm_1 = nn.BatchNorm3d(cout)
        self.drop_2 = nn.Dropout3d(dropout)
        self.conv_2 = nn.Conv3d(cout, cout, 3, padding=1)
        self.batch_norm_2 = nn.BatchNorm3d(cout)
        # One ReLU module, as the original's, so that hooks on nn.ReLU (Captum's guided
        # backpropagation) see both activations.
        self.non_linearity = nn.ReLU(inplace=False)

    def forward(self, x):
        x = self.non_linearity(self.batch_norm_1(self.conv_1(self.drop_1(x))))
        return self.non_linearity(self.batch_norm_2(self.conv_2(self.drop_2(x))))


class Inc(nn.Module):
    def __init__(self, cin, cout, dropout):
        super().__init__()
        self.conv_block_1 = ConvBlock(cin, cout, dropout)

    def forward(self, x):
        return self.conv_block_1(x)


class Down(nn.Module):
    def __init__(self, cin, cout, dropout, updown_dropout):
        super().__init__()
        self.down = nn.Sequential(
            nn.Dropout3d(updown_dropout),
            nn.Conv3d(cin, cin, 2, stride=2),
            ConvBlock(cin, cout, dropout),
        )

    def forward(self, x):
        return self.down(x)


class Up(nn.Module):
    def __init__(self, cin, cout, dropout, updown_dropout):
        super().__init__()
        self.drop = nn.Dropout3d(updown_dropout)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.conv = ConvBlock(cin, cout, dropout)

    def forward(self, x, skip):
        return self.conv(torch.cat([self.up(self.drop(x)), skip], dim=1))


class OutConv(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv_1 = nn.Conv3d(cin, cout, 1)

    def forward(self, x):
        return self.conv_1(x)


class UNet3d(nn.Module):
    def __init__(self, in_channels=1, num_classes=3, base_channels=32, dropout=0.25,
                 updown_dropout=0.001):
        super().__init__()
        c = base_channels
        self.inc = Inc(in_channels, c, dropout)
        self.down1 = Down(c, 2 * c, dropout, updown_dropout)
        self.down2 = Down(2 * c, 4 * c, dropout, updown_dropout)
        self.mid = ConvBlock(4 * c, 4 * c, dropout)
        self.up1 = Up(4 * c + 2 * c, 2 * c, dropout, updown_dropout)
        self.up2 = Up(2 * c + c, c, dropout, updown_dropout)
        self.outc = OutConv(c, num_classes)

    def forward(self, x):
        x1 = self.inc(x)
        x2 = self.down1(x1)
        x3 = self.mid(self.down2(x2))
        return self.outc(self.up2(self.up1(x3, x2), x1))
