//! Repository engine: storage over OpenDAL, packs, index, snapshots, backup, restore, check.
