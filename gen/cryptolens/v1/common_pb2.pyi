import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Bar(_message.Message):
    __slots__ = ("time", "open", "high", "low", "close", "volume", "partial", "suspect")
    TIME_FIELD_NUMBER: _ClassVar[int]
    OPEN_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    LOW_FIELD_NUMBER: _ClassVar[int]
    CLOSE_FIELD_NUMBER: _ClassVar[int]
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_FIELD_NUMBER: _ClassVar[int]
    SUSPECT_FIELD_NUMBER: _ClassVar[int]
    time: _timestamp_pb2.Timestamp
    open: float
    high: float
    low: float
    close: float
    volume: float
    partial: bool
    suspect: bool
    def __init__(self, time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., open: _Optional[float] = ..., high: _Optional[float] = ..., low: _Optional[float] = ..., close: _Optional[float] = ..., volume: _Optional[float] = ..., partial: _Optional[bool] = ..., suspect: _Optional[bool] = ...) -> None: ...

class Gap(_message.Message):
    __slots__ = ("start", "end", "missing_bars")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    MISSING_BARS_FIELD_NUMBER: _ClassVar[int]
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    missing_bars: int
    def __init__(self, start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., missing_bars: _Optional[int] = ...) -> None: ...

class Freshness(_message.Message):
    __slots__ = ("newest_bar", "age_seconds", "stale", "stale_after_bars")
    NEWEST_BAR_FIELD_NUMBER: _ClassVar[int]
    AGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    STALE_AFTER_BARS_FIELD_NUMBER: _ClassVar[int]
    newest_bar: _timestamp_pb2.Timestamp
    age_seconds: float
    stale: bool
    stale_after_bars: int
    def __init__(self, newest_bar: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., age_seconds: _Optional[float] = ..., stale: _Optional[bool] = ..., stale_after_bars: _Optional[int] = ...) -> None: ...

class Coverage(_message.Message):
    __slots__ = ("requested_start", "requested_end", "first_bar", "last_bar", "expected_bars", "bars", "fraction")
    REQUESTED_START_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_END_FIELD_NUMBER: _ClassVar[int]
    FIRST_BAR_FIELD_NUMBER: _ClassVar[int]
    LAST_BAR_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_BARS_FIELD_NUMBER: _ClassVar[int]
    BARS_FIELD_NUMBER: _ClassVar[int]
    FRACTION_FIELD_NUMBER: _ClassVar[int]
    requested_start: _timestamp_pb2.Timestamp
    requested_end: _timestamp_pb2.Timestamp
    first_bar: _timestamp_pb2.Timestamp
    last_bar: _timestamp_pb2.Timestamp
    expected_bars: int
    bars: int
    fraction: float
    def __init__(self, requested_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., requested_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., first_bar: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_bar: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expected_bars: _Optional[int] = ..., bars: _Optional[int] = ..., fraction: _Optional[float] = ...) -> None: ...
