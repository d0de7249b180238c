"""Media plane of the gateway: RTP receive, PS demux and relay (sans-I/O cores)."""
