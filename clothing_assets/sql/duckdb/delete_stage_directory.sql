DELETE FROM clothing_stage_directory WHERE STAGE = $stage;
