export { abortSignal, approveCutoverSignal, confirmDestinationGoneSignal, migrateInfrastructure, progressQuery } from './migrate-infrastructure';
export { deployVi, listCloud, removeVi } from './cloud-operations';
export { cleanUpAfterRollback, cleanupProgressQuery } from './clean-up-after-rollback';
