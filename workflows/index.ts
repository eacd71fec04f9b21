export { abortSignal, abortUpdate, approveCutoverSignal, approveUpdate, confirmDestinationGoneSignal, migrateInfrastructure, progressQuery, type OperatorAnswer } from './migrate-infrastructure';
export { deployVi, listCloud, removeVi } from './cloud-operations';
export { cleanUpAfterRollback, cleanupProgressQuery } from './clean-up-after-rollback';
export { evacuateCloud, evacuationProgressQuery } from './evacuate-cloud';
