"""Training: from scratch (:mod:`.fit`), evaluation (:mod:`.evaluate`), prediction (:mod:`.predict`),
and the run folder that ties them together (:mod:`.runs`)."""
