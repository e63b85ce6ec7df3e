"""Person detectors: OpenCV on real photos and demo figures; Grounding DINO and torchvision
plumbing with tiny random models (shapes only: nothing is claimed about what they find);
running a detector over a dataset (stored, resumable, stoppable)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image as PILImage
from sqlalchemy import func, select

from db.engine import session_scope
from db.models import Dataset, Image
from db.people import PeopleFlag, PeopleScan, PersonProposal
from workbench.tiny.detectors import save_tiny_grounding_dino, tiny_rcnn
from workbench.people.detect import detect_people
from workbench.people.detectors import DetectorError, ImageSample, box_iou, make_detector
from workbench.progress import Cancelled


def sample_of(rgb: np.ndarray, image_id: int = 1) -> ImageSample:
    return ImageSample(image_id=image_id, file_name=f"{image_id}.jpg", width=rgb.shape[1], height=rgb.shape[0],
                       path=None, rgb=rgb)


@pytest.fixture(scope="module")
def opencv():
    return make_detector("opencv")


def skimage_photo(name: str) -> np.ndarray:
    data = pytest.importorskip("skimage.data", reason="scikit-image (requirements-dev.txt) holds the real photos")
    return np.asarray(getattr(data, name)())[..., :3]


def test_opencv_finds_the_astronauts_face_and_implies_her_body(opencv):
    photo = skimage_photo("astronaut")  # Eileen Collins, face at about x 170-280, y 50-170
    proposals = opencv.detect_one(photo)
    faces = [p for p in proposals if "face" in p.details]
    assert faces, [(p.kind, p.box) for p in proposals]
    fx, fy, fw, fh = faces[0].details["face"]
    assert 170 <= fx + fw / 2 <= 280 and 50 <= fy + fh / 2 <= 170
    body = faces[0].box
    assert body[1] <= fy and body[1] + body[3] > fy + 3 * fh  # the person reaches well below the face
    assert faces[0].score > 0.5


def test_opencv_is_not_confident_about_a_photo_without_people(opencv):
    photo = skimage_photo("coffee")
    assert all(p.score < 0.3 for p in opencv.detect_one(photo))
    assert opencv.detect_one(np.full((200, 160, 3), 128, np.uint8)) == []


def test_opencv_finds_the_big_figures_of_the_demo(opencv, demo_files):
    truth = json.loads(demo_files.truth.read_text())["images"]
    found = missed = 0
    for name, t in list(truth.items())[:6]:
        big = [p for p in t["people"] if p["box"][3] > 0.5 * t["height"]]
        if not big:
            continue
        rgb = np.asarray(PILImage.open(demo_files.images_dir / name).convert("RGB"))
        boxes = [p.box for p in opencv.detect_one(rgb) if p.kind == "body"]
        for person in big:
            if any(box_iou(person["box"], b) > 0.3 for b in boxes):
                found += 1
            else:
                missed += 1
    assert found >= 3 * missed and found > 0, (found, missed)


def test_detectors_are_named_and_settings_change_their_key():
    assert make_detector("opencv").settings_key() != make_detector("opencv", pad_fraction=0.0).settings_key()
    # the device does not change what is found, so it does not change the key either
    assert (make_detector("grounding-dino", device="cpu").settings_key()
            == make_detector("grounding-dino", device="cuda").settings_key())
    with pytest.raises(DetectorError, match="unknown detector 'yolo'; choose one of grounding-dino"):
        make_detector("yolo")


def test_grounding_dino_loads_a_local_folder_and_returns_boxes_inside_each_image(tmp_path):
    folder = save_tiny_grounding_dino(tmp_path / "gdino")
    detector = make_detector("grounding-dino", model=str(folder), box_threshold=0.0, text_threshold=0.0,
                             batch_size=2)
    rng = np.random.default_rng(0)
    samples = [sample_of(rng.integers(0, 255, (48, 40, 3), dtype=np.uint8), 1),
               sample_of(rng.integers(0, 255, (30, 64, 3), dtype=np.uint8), 2),
               sample_of(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), 3)]
    found = detector.detect(samples)
    assert len(found) == 3
    for sample, proposals in zip(samples, found):
        assert 0 < len(proposals) <= 10  # at most one per query slot
        for p in proposals:
            x, y, w, h = p.box
            assert 0 <= x and 0 <= y and x + w <= sample.width + 1e-3 and y + h <= sample.height + 1e-3
            assert 0.0 <= p.score <= 1.0 and p.kind == "person"
    strict = make_detector("grounding-dino", model=str(folder), box_threshold=1.0)
    assert strict.detect(samples[:1]) == [[]]


def test_grounding_dino_names_the_model_it_cannot_load(tmp_path):
    detector = make_detector("grounding-dino", model=str(tmp_path / "no-such-model"))
    with pytest.raises(DetectorError, match="Grounding DINO '.*no-such-model' is missing.*Fix: the local Grounding DINO at .*no-such-model"):
        detector.detect([sample_of(np.zeros((32, 32, 3), np.uint8))])


def test_torchvision_keeps_person_instances_with_their_masks():
    from workbench.people.torchvision_rcnn import TorchvisionDetector, TorchvisionSettings

    rgb = np.random.default_rng(1).integers(0, 255, (48, 56, 3), dtype=np.uint8)
    settings = TorchvisionSettings(score_threshold=0.5)
    persons = TorchvisionDetector(settings, model=tiny_rcnn("mask", favour_class=1)).detect([sample_of(rgb)])[0]
    assert persons
    for p in persons:
        assert p.kind == "person" and p.score >= 0.5
        assert p.mask is not None and p.mask.shape == (48, 56) and p.mask.dtype == bool
    bicycles = TorchvisionDetector(settings, model=tiny_rcnn("mask", favour_class=2)).detect([sample_of(rgb)])[0]
    assert bicycles == []  # COCO class 2 is not a person


def test_torchvision_keypoint_rcnn_keeps_keypoints():
    from workbench.people.torchvision_rcnn import TorchvisionDetector, TorchvisionSettings

    rgb = np.random.default_rng(2).integers(0, 255, (40, 40, 3), dtype=np.uint8)
    detector = TorchvisionDetector(TorchvisionSettings(architecture="keypointrcnn_resnet50_fpn"),
                                   model=tiny_rcnn("keypoint", favour_class=1))
    persons = detector.detect([sample_of(rgb)])[0]
    assert persons and all(len(p.details["keypoints"]) == 17 and p.mask is None for p in persons)


def test_torchvision_says_where_its_weights_should_be(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    rgb = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(DetectorError, match="not in its cache .*hub/checkpoints"):
        make_detector("torchvision").detect([sample_of(rgb)])
    with pytest.raises(DetectorError, match="torchvision weights .*missing.pth.* does not exist. Fix: "):
        make_detector("torchvision", weights_path=str(tmp_path / "missing.pth")).detect([sample_of(rgb)])


def count(engine, model) -> int:
    with session_scope(engine) as session:
        return session.scalar(select(func.count()).select_from(model))


def test_detection_over_a_dataset_is_stored_resumable_and_stoppable(demo_engine):
    detector = make_detector("annotations")
    stops = iter([False, True])
    with pytest.raises(Cancelled):
        detect_people(demo_engine, "demo", detector, batch_size=4, should_stop=lambda: next(stops))
    assert count(demo_engine, PeopleScan) == 8  # two batches were committed before the stop
    seen: list[tuple[int, int]] = []
    report = detect_people(demo_engine, "demo", detector, batch_size=4, progress=lambda d, t: seen.append((d, t)))
    assert (report.already_done, report.processed, report.images) == (8, 4, 12)
    assert seen[-1] == (4, 4)
    again = detect_people(demo_engine, "demo", detector)
    assert again.processed == 0 and count(demo_engine, PeopleScan) == 12
    with session_scope(demo_engine) as session:
        labelled = session.scalars(select(PersonProposal).where(PersonProposal.kind == "labelled")).all()
        assert labelled and all(p.coverage > 0.1 for p in labelled)


def test_a_lower_threshold_flags_stored_scans_without_detecting_again(demo_engine):
    detector = make_detector("annotations")
    detect_people(demo_engine, "demo", detector, threshold=1.01)
    assert count(demo_engine, PeopleFlag) == 0
    report = detect_people(demo_engine, "demo", detector, threshold=0.0)
    assert report.processed == 0 and report.flagged == 12 == count(demo_engine, PeopleFlag)


def test_opencv_over_the_demo_flags_images_with_an_unlabelled_person(demo_engine, demo_files):
    truth = json.loads(demo_files.truth.read_text())["images"]
    report = detect_people(demo_engine, "demo", make_detector("opencv"))
    assert report.processed == 12
    with session_scope(demo_engine) as session:
        scores = dict(session.execute(select(PeopleScan.image_id, PeopleScan.score)).all())
        names = dict(session.execute(select(Image.id, Image.file_name)).all())
    unlabelled = [scores[i] for i in scores if truth[names[i]]["unlabelled_person"]]
    labelled = [scores[i] for i in scores if not truth[names[i]]["unlabelled_person"]]
    assert unlabelled and max(unlabelled) > max(np.median(labelled), 0.2)


def test_torchvision_masks_reach_the_store_with_mask_coverage(demo_engine):
    from workbench.people.torchvision_rcnn import TorchvisionDetector, TorchvisionSettings

    detector = TorchvisionDetector(TorchvisionSettings(score_threshold=0.5), model=tiny_rcnn("mask", 1))
    report = detect_people(demo_engine, "demo", detector, limit=2, batch_size=2)
    assert report.processed == 2 and report.proposals > 0
    with session_scope(demo_engine) as session:
        rows = session.scalars(select(PersonProposal).where(PersonProposal.detector == "torchvision")).all()
    assert all(r.mask_rle is not None and 0.0 <= r.coverage <= 1.0 for r in rows)


def test_an_unreadable_image_is_reported_and_left_for_the_next_run(demo_engine, tmp_path):
    with session_scope(demo_engine) as session:
        session.scalar(select(Dataset)).images_root = str(tmp_path / "gone")
    report = detect_people(demo_engine, "demo", make_detector("opencv"), limit=2)
    assert report.processed == 0 and len(report.failed) == 2
    assert "cannot read image" in report.failed[0]["error"]
    assert count(demo_engine, PeopleScan) == 0

