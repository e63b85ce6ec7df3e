"""An OpenPose annotator with random weights, saved where ``OpenposeDetector.from_pretrained`` reads.

controlnet_aux's OpenPose networks have fixed architectures (the body and hand models of the
CMU release and the face model), so the shapes cannot shrink; what makes this small on disk is
that every tensor is a view of one shared random buffer, which ``torch.save`` stores once
(about 5 MB a file in half precision instead of hundreds). The detector loads it through its
real ``from_pretrained`` path and runs it end to end; its poses are meaningless, which is all a
test or a "tiny models" button needs.
"""

from __future__ import annotations

from pathlib import Path

BODY_FILE = "body_pose_model.pth"
HAND_FILE = "hand_pose_model.pth"
FACE_FILE = "facenet.pth"


def _shared_random_state(model, seed: int, strip_prefix: bool):
    """The model's state dict with every tensor a view of one random half-precision buffer."""
    import torch

    state = model.state_dict()
    largest = max(t.numel() for t in state.values())
    buffer = torch.randn(largest, generator=torch.Generator().manual_seed(seed), dtype=torch.float32)
    buffer = buffer.mul_(0.01).to(torch.float16)
    out = {}
    for name, tensor in state.items():
        # controlnet_aux's body and hand loaders look weights up without the first name component
        key = ".".join(name.split(".")[1:]) if strip_prefix else name
        out[key] = buffer[:tensor.numel()].view(tensor.shape)
    return out


def build_tiny_openpose(folder: Path, seed: int = 0) -> Path:
    """Write ``body_pose_model.pth``, ``hand_pose_model.pth`` and ``facenet.pth`` with random
    weights into ``folder`` (the layout ``OpenposeDetector.from_pretrained(folder)`` reads)."""
    import torch
    from controlnet_aux.open_pose.face import FaceNet
    from controlnet_aux.open_pose.model import bodypose_model, handpose_model

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with torch.device("meta"):  # only the shapes are needed: no time spent initialising weights
        body, hand, face = bodypose_model(), handpose_model(), FaceNet()
    torch.save(_shared_random_state(body, seed, strip_prefix=True), folder / BODY_FILE)
    torch.save(_shared_random_state(hand, seed + 1, strip_prefix=True), folder / HAND_FILE)
    torch.save(_shared_random_state(face, seed + 2, strip_prefix=False), folder / FACE_FILE)
    return folder
