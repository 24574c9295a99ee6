"""Training: from scratch (:mod:`.fit`), fine-tuning (:mod:`.finetune`), cached features and a head (:mod:`.features`,
:mod:`.cvhead`), the resume state (:mod:`.resume`), evaluation (:mod:`.evaluate`), and the run folder that ties
them together (:mod:`.runs`)."""
