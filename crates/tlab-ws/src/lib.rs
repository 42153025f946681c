//! WebSocket transport of transport-lab: modes `ws` (one connection per logical stream) and `ws-mux` (all streams multiplexed on one connection).
