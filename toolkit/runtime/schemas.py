"""The door API's answers as pydantic models: every successful response has a schema in ``/openapi.json``.

Only the server imports this module (pydantic comes with fastapi, in the ``door`` extra).
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    """Every 4xx and 5xx answer."""

    error: str = Field(description="what is wrong, and how to fix it when the client can")


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class Live(BaseModel):
    live: bool


class Ready(BaseModel):
    ready: bool
    reason: str = Field(description="'ready', or why the door is locked and not deciding")


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int | None]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: dict = Field(description="labels, output_kind, threshold, file, sha256")


class ModelReady(BaseModel):
    name: str
    ready: bool


class OutputTensor(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    data: list[float] | None = Field(None, description="absent when sent in the binary tensor extension")
    parameters: dict | None = None


class InferResponse(BaseModel):
    """A KServe v2 inference answer (JSON; with the binary extension, the tensors follow the JSON header)."""

    model_name: str
    model_version: str | None = None
    id: str | None = None
    outputs: list[OutputTensor]


class Hand(BaseModel):
    score: float = Field(description="the palm detector's score of the hand the answer is about")
    handedness: str = Field(description="'left' or 'right', as the landmark model sees it")


class Face(BaseModel):
    box: list[float] = Field(description="the face the answer is about: x0, y0, x1, y1 in the image's pixels")
    score: float = Field(description="the face detector's score")
    presence: float | None = Field(None, description="the chain's face-presence score, when it has one")


class Prediction(BaseModel):
    model: str
    label: str
    probability: float = Field(description="P(positive label) for a yes/no model, else the top class's")
    threshold: float | None
    decision: bool | None = Field(description="probability >= threshold (yes/no models only)")
    latency_ms: float
    probabilities: dict[str, float]
    hand: Hand | None = Field(None, description="hand-sign exports only: the hand seen (null: none, the label is "
                              "'no_hand')")
    face: Face | None = Field(None, description="exports with a face detector only: the face classified (its crop); "
                              "null: no face found, the whole image was classified (the door would not vote)")


class Unlocked(BaseModel):
    state: str = Field(description="'open'")
    seconds: float = Field(description="how long the relay stays energised")


class DoorState(BaseModel):
    state: str = Field(description="'locked', 'open', 'locked by fault' or 'no door' (serve without a camera)")
    ready: bool
    reason: str
    model: str
    file: str
    version: str | None = Field(None, description="the adapted head version deciding ('toolkit door adapt'), "
                                "None: the export's own head")
    labels: list[str]
    threshold: float | None
    far: float | None = Field(description="false-accept rate per frame at the threshold (manifest)")
    frr: float | None = Field(description="false-reject rate per frame at the threshold (manifest)")
    rates: str | None = Field(None, description="FAR and FRR for a person, with the frames they were measured "
                              "on; a FAR measured as 0 is shown as its 95 % bound: '≤ 10 % per frame (0 of 30)'")
    uptime_seconds: float
    fps: float = Field(description="frames judged per second over the last 5 s")
    last_latency_ms: float | None = Field(description="frame to decision, the last frame judged")
    votes: int | None = Field(description="k of the k-of-n rule")
    window: int | None = Field(description="n of the k-of-n rule")
    snapshots: bool = Field(description="snapshots are kept for review")
    notice: str | None = Field(None, description="why manual unlock is disabled though a token is configured")


class Decision(BaseModel):
    time: float | None = Field(description="Unix seconds")
    probability: float | None = Field(description="None: no face in the frame, or no frame (a fault)")
    decision: str = Field(description="'locked', 'open' or 'manual_open'")
    opened: bool = Field(description="this frame started an open period")
    votes: int
    reason: str
    latency_ms: float
    k: int | None
    n: int | None
    box: list[int] | None = Field(description="the face box (x0, y0, x1, y1) in frame pixels")


class Fault(BaseModel):
    time: float | None
    reason: str


class Timeline(BaseModel):
    decisions: list[Decision] = Field(description="newest first")
    faults: list[Fault] = Field(description="newest first")


class Snapshot(BaseModel):
    name: str
    time: float | None
    probability: float | None
    decision: str | None
    opened: bool | None
    votes: int | None
    reason: str | None
    box: list[int] | None


class Snapshots(BaseModel):
    labels: list[str] = Field(description="the labels a snapshot can be given (the model's)")
    total_bytes: int
    cap_bytes: int
    dropped: int = Field(description="snapshots dropped over the cap since the door started")
    snapshots: list[Snapshot] = Field(description="newest first")


class LabelRequest(BaseModel):
    label: str


class Labelled(BaseModel):
    name: str
    label: str
    path: str = Field(description="where the photo now is, in the image folder 'toolkit finetune --data' reads")
