"""Model factory over timm and our small-image CNN, with pretrained weights from the hub (src/train/hub.py) or a
local file."""
from __future__ import annotations

from pathlib import Path

import timm
import torch
from timm.layers import DropPath
from timm.models import adapt_input_conv, register_model
from torch import nn

from src.core.errors import UserError
from src.train.config import TrainConfig
from src.train.hub import HUB_PREFIX, create_hub_model, is_hub, resolve_hub


def conv_bn(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))


class SmallCNN(nn.Module):
    """VGG-style net for 24-32 px images: timm's stems downsample 4x at once, which wastes tiny inputs.

    Stages of 3x3 conv-BN-ReLU at full, 1/2 and 1/4 resolution, global average pool, dropout, linear.
    Full resolution gets one conv only: on a CPU a second one there costs the most time per parameter
    (measured on 2 cores: 1,075 vs 1,265 img/s training at 28 px with it).
    Follows timm's interface (forward_features / forward_head / get_classifier / reset_classifier).
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 1, widths: tuple[int, ...] = (32, 64, 128),
                 depths: tuple[int, ...] = (1, 2, 2), drop_rate: float = 0.0, **_unused):
        super().__init__()
        layers, c_in = [], in_chans
        for i, (width, depth) in enumerate(zip(widths, depths)):
            if i:
                layers.append(nn.MaxPool2d(2))
            for _ in range(depth):
                layers.append(conv_bn(c_in, width))
                c_in = width
        self.features = nn.Sequential(*layers)
        self.num_features = c_in
        self.drop = nn.Dropout(drop_rate)
        self.num_classes = num_classes
        self.fc = nn.Linear(c_in, num_classes) if num_classes else nn.Identity()  # 0 classes: features only
        self.pretrained_cfg = {"first_conv": "features.0.0", "classifier": "fc"}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(x.mean(dim=(2, 3)))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()


@register_model
def smallcnn(pretrained: bool = False, **kwargs) -> SmallCNN:
    """0.28 M parameters: 1, 2 and 2 convs at full, 1/2 and 1/4 resolution; the demo default."""
    if kwargs.get("drop_path_rate"):
        raise TypeError("smallcnn has no residual branches to drop (smallresnet has)")
    return _small_cnn(kwargs, widths=(32, 64, 128), depths=(1, 2, 2))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 strided) shortcut; the residual branch is dropped
    per sample with probability `drop_path` while training (stochastic depth)."""

    def __init__(self, c_in: int, c_out: int, stride: int, drop_path: float):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        nn.init.zeros_(self.bn2.weight)  # each block starts as the identity: deep stacks train from step one
        self.shortcut = nn.Identity() if stride == 1 and c_in == c_out else nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
        self.drop_path = DropPath(drop_path) if drop_path else nn.Identity()
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.act(self.bn1(self.conv1(x)))))
        return self.act(self.shortcut(x) + self.drop_path(out))


class SmallResNet(SmallCNN):
    """ResNet for small images (24-64 px): a 3x3 stem at full resolution (no 4x downsampling stem), then
    stages of BasicBlocks, each stage after the first halving the resolution; global pool, dropout, linear.
    `widths` and `depths` (blocks per stage) set the size; drop path grows linearly to `drop_path_rate`."""

    def __init__(self, num_classes: int = 10, in_chans: int = 1, widths: tuple[int, ...] = (32, 64, 128),
                 depths: tuple[int, ...] = (1, 1, 1), drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 **_unused):
        super().__init__(num_classes, in_chans, widths=(widths[0],), depths=(1,), drop_rate=drop_rate)
        total, done = sum(depths), 0
        layers, c_in = [conv_bn(in_chans, widths[0])], widths[0]
        for i, (width, depth) in enumerate(zip(widths, depths)):
            for j in range(depth):
                rate = drop_path_rate * done / max(total - 1, 1)
                layers.append(BasicBlock(c_in, width, 2 if i and not j else 1, rate))
                c_in, done = width, done + 1
        self.features = nn.Sequential(*layers)
        self.num_features = c_in
        self.reset_classifier(num_classes)


def _small_cnn(kwargs: dict, cls: type = SmallCNN, **arch) -> SmallCNN:
    # timm passes hub-related arguments to every entry point; ours have no hub weights.
    kwargs = {k: v for k, v in kwargs.items() if k not in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")}
    return cls(**{**arch, **kwargs})  # explicit widths/depths (timm.create_model kwargs) win over the variant's


@register_model
def smallresnet(pretrained: bool = False, **kwargs) -> SmallResNet:
    """0.3 M parameters: stem + 1 block per stage at 32, 64, 128 channels (full, 1/2, 1/4 resolution)."""
    return _small_cnn(kwargs, SmallResNet, widths=(32, 64, 128), depths=(1, 1, 1))


@register_model
def smallresnet_m(pretrained: bool = False, **kwargs) -> SmallResNet:
    """0.7 M parameters: 2 blocks per stage at 32, 64, 128 channels."""
    return _small_cnn(kwargs, SmallResNet, widths=(32, 64, 128), depths=(2, 2, 2))


@register_model
def smallresnet_l(pretrained: bool = False, **kwargs) -> SmallResNet:
    """2.8 M parameters: 2 blocks per stage at 64, 128, 256 channels."""
    return _small_cnn(kwargs, SmallResNet, widths=(64, 128, 256), depths=(2, 2, 2))


def build_model(cfg: TrainConfig, in_chans: int, num_classes: int) -> nn.Module:
    """timm model by name with our channel and class counts, optionally with hub weights (through timm's
    loader) or local weights."""
    if is_hub(cfg.pretrained):
        return create_hub_model(resolve_hub(cfg.model, cfg.pretrained), num_classes, in_chans, cfg.drop_rate,
                                cfg.drop_path_rate)
    name = cfg.model
    if name.startswith(HUB_PREFIX):  # a hub architecture, weights from elsewhere (a checkpoint): built from its
        name = resolve_hub(name, name).timm_name()  # cached config.json, or the one-line error says how to get it
    elif not timm.is_model(name):
        hint = timm.list_models(f"*{name}*")[:5]
        raise UserError(f"model {name!r} is not a timm model name" + (f" (close: {hint})" if hint else ""))
    extra = {"drop_path_rate": cfg.drop_path_rate} if cfg.drop_path_rate else {}
    try:
        model = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans,
                                  drop_rate=cfg.drop_rate, **extra)
    except TypeError as err:  # timm passes drop_path_rate on to constructors that may not take it
        if not extra:
            raise
        raise UserError(f"model {name} does not support drop_path_rate ({str(err)[:80]}); set it to 0") from None
    if cfg.pretrained:
        load_pretrained(model, cfg.pretrained, in_chans)
    return model


def classifier_modules(model: nn.Module) -> tuple[nn.Module, ...]:
    """The classifier head's modules: timm's get_classifier returns one, or a tuple (distilled models)."""
    head = model.get_classifier()
    return tuple(head) if isinstance(head, (tuple, list)) else (head,)


def classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    """State-dict key prefixes of the classifier ('fc.', 'head.fc.', ...) from timm's pretrained_cfg."""
    heads = (getattr(model, "pretrained_cfg", {}) or {}).get("classifier", "")
    return tuple(f"{h}." for h in ((heads,) if isinstance(heads, str) else heads) if h)


def head_and_backbone(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """The classifier head's parameters and everything else's (the backbone), each in model order."""
    ids = {id(p) for head in classifier_modules(model) for p in head.parameters()}
    params = list(model.parameters())
    return [p for p in params if id(p) in ids], [p for p in params if id(p) not in ids]


def freeze_backbone_norms(model: nn.Module) -> None:
    """Put the backbone's BatchNorm layers in eval mode, so a frozen backbone's running statistics stay the
    pretrained ones (the head, rarely normalised, keeps training mode)."""
    head = {m for h in classifier_modules(model) for m in h.modules()}
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module not in head:
            module.eval()


def check_ssl_weights(path: str | Path, model: str, height_px: int, width_px: int) -> None:
    """pretrain.py's backbone.pt records its network and image size: refuse another network, and say so when
    fine-tuning at another size (the weights load, but features learnt at one scale transfer worse)."""
    if is_hub(str(path)):
        return
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # not a torch file (e.g. safetensors): nothing recorded to compare
        return
    if not isinstance(state, dict) or state.get("kind") != "ssl":
        return
    made = state["config"]["model"]
    if made != model:
        raise UserError(f"--pretrained {path}: pretrained {made!r}, but --model is {model!r}; use --model {made}")
    size = (state["image_spec"]["height_px"], state["image_spec"]["width_px"])
    if size != (height_px, width_px):
        print(f"pretrained: {path} was pretrained at {size[0]}x{size[1]} px, fine-tuning at {height_px}x{width_px}; "
              f"pretrain with --image-size-px {height_px} for features learnt at this size")


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors or a torch file (weights_only: no code runs on load)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--pretrained {path}: file not found (weights are only read from local files)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # many formats, many failure types; all mean "not a weight file we can read"
        raise UserError(f"--pretrained {path}: cannot read weights ({str(err).splitlines()[0][:120]})") from None
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise UserError(f"--pretrained {path}: expected a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def load_pretrained(model: nn.Module, path: str | Path, in_chans: int) -> None:
    """Load matching weights; adapt the first conv to in_chans and re-initialise a mismatched head."""
    state = read_weights(path)
    own = model.state_dict()
    pcfg = getattr(model, "pretrained_cfg", {}) or {}
    first_conv = f"{pcfg.get('first_conv', '')}.weight"
    heads = classifier_prefixes(model)
    loaded, skipped_head = {}, []
    for key, value in state.items():
        if key not in own:
            continue
        if value.shape != own[key].shape:
            if key == first_conv and value.ndim == 4:
                value = adapt_input_conv(in_chans, value)
            elif key.startswith(heads):
                skipped_head.append(key)
                continue
            else:
                raise UserError(f"--pretrained {path}: {key} has shape {tuple(value.shape)}, "
                                f"model needs {tuple(own[key].shape)}; wrong architecture?")
        loaded[key] = value
    backbone = [k for k in own if not k.startswith(heads)]
    missing = [k for k in backbone if k not in loaded]
    # A few coincidental names (a bias, a BN buffer) are not a transfer: demand most of the backbone.
    if len(missing) > len(backbone) / 2:
        raise UserError(f"--pretrained {path}: only {len(backbone) - len(missing)} of {len(backbone)} backbone "
                        f"tensor names match model {type(model).__name__}; wrong architecture?")
    model.load_state_dict(loaded, strict=False)
    head_in_file = any(k.startswith(heads) for k in state)
    print(f"pretrained: loaded {len(loaded)}/{len(own)} tensors from {path}"
          + (", classifier re-initialised" if skipped_head else "")
          + ("" if head_in_file else ", new classifier head (none in the file)")
          + (f"; {len(missing)} non-head tensors kept random (e.g. {missing[0]})" if missing else ""))
