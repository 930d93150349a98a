-- The auctioneer lists only UNCLAIMED instances each round
-- (`ActualLrpFilter::state`); an index keeps that a lookup, not a scan.
CREATE INDEX actual_lrps_by_state ON actual_lrps (state);
