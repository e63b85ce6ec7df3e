"""Annotation structure alone: garments grouped into people, people counted, free space scored."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sqlalchemy import select

from db.engine import session_scope
from db.models import Dataset, Image
from workbench.people.annotations import AnnotationDetector, cluster_garments, free_space, labelled_people
from workbench.people.detect import load_samples
from workbench.people.detectors import Garment, ImageSample

W, H = 300, 200


def garment(category: str, x: int, y: int, w: int, h: int) -> Garment:
    mask = np.zeros((H, W), bool)
    mask[y:y + h, x:x + w] = True
    return Garment(category, "", (x, y, w, h), mask)


def person(x: int, shoes: int = 2) -> list[Garment]:
    """A hat, a top with two sleeves touching it, a skirt, and shoes below bare legs."""
    parts = [garment("hat", x + 5, 5, 20, 8), garment("top", x, 30, 30, 40),
             garment("sleeve", x - 8, 30, 8, 30), garment("sleeve", x + 30, 30, 8, 30),
             garment("skirt", x, 70, 30, 30)]
    parts += [garment("shoe", x + 2 + 14 * (i % 2), 160 + 12 * (i // 2), 10, 8) for i in range(shoes)]
    return parts


def test_one_dressed_person_is_one_cluster_even_with_bare_legs_and_a_hat():
    clusters = cluster_garments(person(100), W, H)
    assert len(clusters) == 1 and labelled_people(clusters) == 1
    assert clusters[0].counts == {"shoes": 2, "sleeves": 2, "whole_body": 0}


def test_people_standing_apart_are_counted_apart():
    clusters = cluster_garments(person(20) + person(200), W, H)
    assert labelled_people(clusters) == 2
    assert clusters[0].box[0] < clusters[1].box[0]  # left to right


def test_more_than_two_shoes_in_one_cluster_means_several_people():
    clusters = cluster_garments(person(100, shoes=4), W, H)
    assert len(clusters) == 1 and clusters[0].people == 2 and labelled_people(clusters) == 2


def test_free_space_is_the_widest_empty_share_of_the_width():
    share, where = free_space(cluster_garments(person(20), W, H), W, H)
    assert share == pytest.approx((W - 58) / W, abs=0.01)  # the person spans x 12-58
    assert where[0] == pytest.approx(58, abs=1) and where[2] == pytest.approx(W - 58, abs=1)
    assert free_space([], W, H) == (0.0, None)


def test_the_detector_proposes_labelled_people_and_room_for_another():
    detector = AnnotationDetector()
    alone = ImageSample(1, "a.jpg", W, H, None, garments=person(130))
    beside = ImageSample(2, "b.jpg", W, H, None, garments=person(10))
    [a_props, b_props] = detector.detect([alone, beside])
    assert [p.kind for p in a_props] == ["labelled", "free-space"]
    room = {p.kind: p for p in b_props}["free-space"].score
    centred = {p.kind: p for p in a_props}["free-space"].score
    assert room == 1.0 and centred < room
    assert detector.detect([ImageSample(3, "c.jpg", W, H, None)]) == [[]]


def test_on_the_demo_the_labelled_people_are_counted(demo_engine, demo_files):
    truth = json.loads(demo_files.truth.read_text())["images"]
    with session_scope(demo_engine) as session:
        dataset = session.scalar(select(Dataset))
        samples = load_samples(session, dataset, list(session.scalars(select(Image.id))))
    right = 0
    for sample in samples:
        expected = sum(p["labelled"] for p in truth[sample.file_name]["people"])
        right += labelled_people(cluster_garments(sample.garments, sample.width, sample.height)) == expected
    assert right >= 0.75 * len(samples), f"{right} of {len(samples)} counted right"
