SELECT count(*) AS FILE_COUNT, coalesce(sum(SIZE), 0) AS TOTAL_BYTES
FROM clothing_stage_directory WHERE STAGE = $stage;
