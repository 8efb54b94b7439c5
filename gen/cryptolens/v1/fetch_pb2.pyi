import datetime

from cryptolens.v1 import common_pb2 as _common_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListSymbolsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SeriesInfo(_message.Message):
    __slots__ = ("symbol", "interval", "count", "first", "last", "source", "data_version", "watched", "origin", "provenance", "freshness")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    FIRST_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    DATA_VERSION_FIELD_NUMBER: _ClassVar[int]
    WATCHED_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    FRESHNESS_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    interval: str
    count: int
    first: _timestamp_pb2.Timestamp
    last: _timestamp_pb2.Timestamp
    source: str
    data_version: int
    watched: bool
    origin: str
    provenance: _containers.RepeatedCompositeFieldContainer[SourceRange]
    freshness: _common_pb2.Freshness
    def __init__(self, symbol: _Optional[str] = ..., interval: _Optional[str] = ..., count: _Optional[int] = ..., first: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., source: _Optional[str] = ..., data_version: _Optional[int] = ..., watched: _Optional[bool] = ..., origin: _Optional[str] = ..., provenance: _Optional[_Iterable[_Union[SourceRange, _Mapping]]] = ..., freshness: _Optional[_Union[_common_pb2.Freshness, _Mapping]] = ...) -> None: ...

class SourceRange(_message.Message):
    __slots__ = ("first", "last", "source")
    FIRST_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    first: _timestamp_pb2.Timestamp
    last: _timestamp_pb2.Timestamp
    source: str
    def __init__(self, first: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., source: _Optional[str] = ...) -> None: ...

class ListSymbolsResponse(_message.Message):
    __slots__ = ("series", "watchlist", "store")
    SERIES_FIELD_NUMBER: _ClassVar[int]
    WATCHLIST_FIELD_NUMBER: _ClassVar[int]
    STORE_FIELD_NUMBER: _ClassVar[int]
    series: _containers.RepeatedCompositeFieldContainer[SeriesInfo]
    watchlist: _containers.RepeatedScalarFieldContainer[str]
    store: StoreContents
    def __init__(self, series: _Optional[_Iterable[_Union[SeriesInfo, _Mapping]]] = ..., watchlist: _Optional[_Iterable[str]] = ..., store: _Optional[_Union[StoreContents, _Mapping]] = ...) -> None: ...

class StoreContents(_message.Message):
    __slots__ = ("began", "lost")
    BEGAN_FIELD_NUMBER: _ClassVar[int]
    LOST_FIELD_NUMBER: _ClassVar[int]
    began: _timestamp_pb2.Timestamp
    lost: bool
    def __init__(self, began: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., lost: _Optional[bool] = ...) -> None: ...

class BackfillRequest(_message.Message):
    __slots__ = ("symbol", "interval", "start", "end")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    interval: str
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    def __init__(self, symbol: _Optional[str] = ..., interval: _Optional[str] = ..., start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class BackfillResponse(_message.Message):
    __slots__ = ("symbol", "interval", "bars_stored", "source", "data_version", "gaps")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    BARS_STORED_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    DATA_VERSION_FIELD_NUMBER: _ClassVar[int]
    GAPS_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    interval: str
    bars_stored: int
    source: str
    data_version: int
    gaps: _containers.RepeatedCompositeFieldContainer[_common_pb2.Gap]
    def __init__(self, symbol: _Optional[str] = ..., interval: _Optional[str] = ..., bars_stored: _Optional[int] = ..., source: _Optional[str] = ..., data_version: _Optional[int] = ..., gaps: _Optional[_Iterable[_Union[_common_pb2.Gap, _Mapping]]] = ...) -> None: ...

class GetBarsRequest(_message.Message):
    __slots__ = ("symbol", "interval", "lookback", "start", "end", "limit", "page_size", "page_token")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    LOOKBACK_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    interval: str
    lookback: str
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    limit: int
    page_size: int
    page_token: str
    def __init__(self, symbol: _Optional[str] = ..., interval: _Optional[str] = ..., lookback: _Optional[str] = ..., start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., limit: _Optional[int] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class GetBarsResponse(_message.Message):
    __slots__ = ("symbol", "interval", "bars", "source", "gaps", "data_version", "next_page_token", "freshness", "origin", "provenance")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    BARS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    GAPS_FIELD_NUMBER: _ClassVar[int]
    DATA_VERSION_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FRESHNESS_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    interval: str
    bars: _containers.RepeatedCompositeFieldContainer[_common_pb2.Bar]
    source: str
    gaps: _containers.RepeatedCompositeFieldContainer[_common_pb2.Gap]
    data_version: int
    next_page_token: str
    freshness: _common_pb2.Freshness
    origin: str
    provenance: _containers.RepeatedCompositeFieldContainer[SourceRange]
    def __init__(self, symbol: _Optional[str] = ..., interval: _Optional[str] = ..., bars: _Optional[_Iterable[_Union[_common_pb2.Bar, _Mapping]]] = ..., source: _Optional[str] = ..., gaps: _Optional[_Iterable[_Union[_common_pb2.Gap, _Mapping]]] = ..., data_version: _Optional[int] = ..., next_page_token: _Optional[str] = ..., freshness: _Optional[_Union[_common_pb2.Freshness, _Mapping]] = ..., origin: _Optional[str] = ..., provenance: _Optional[_Iterable[_Union[SourceRange, _Mapping]]] = ...) -> None: ...

class WatchBarsRequest(_message.Message):
    __slots__ = ("symbols", "interval", "after")
    SYMBOLS_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    symbols: _containers.RepeatedScalarFieldContainer[str]
    interval: str
    after: str
    def __init__(self, symbols: _Optional[_Iterable[str]] = ..., interval: _Optional[str] = ..., after: _Optional[str] = ...) -> None: ...

class WatchBarsResponse(_message.Message):
    __slots__ = ("symbol", "interval", "bars", "data_version", "source", "resume_token", "replaced")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    BARS_FIELD_NUMBER: _ClassVar[int]
    DATA_VERSION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    REPLACED_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    interval: str
    bars: _containers.RepeatedCompositeFieldContainer[_common_pb2.Bar]
    data_version: int
    source: str
    resume_token: str
    replaced: bool
    def __init__(self, symbol: _Optional[str] = ..., interval: _Optional[str] = ..., bars: _Optional[_Iterable[_Union[_common_pb2.Bar, _Mapping]]] = ..., data_version: _Optional[int] = ..., source: _Optional[str] = ..., resume_token: _Optional[str] = ..., replaced: _Optional[bool] = ...) -> None: ...
